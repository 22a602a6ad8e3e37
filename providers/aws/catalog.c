// SPDX-License-Identifier: MIT
/*
 * Which ml.* instance type carries a declared accelerator count, and what
 * it costs an hour. One table, so the mapping users read in
 * providers/aws and docs/infrafs-aws.7 is the mapping the provider uses.
 *
 * Prices: on-demand SageMaker list prices in us-east-1, USD per instance
 * hour, for real-time inference (endpoints) and HyperPod (pools), as
 * published on https://aws.amazon.com/sagemaker/pricing/ and cross-read
 * with third-party summaries of that page (October 2025, March 2026);
 * transcribed 2026-11-28. Other regions and discounts differ: teams that
 * charge back exact figures set `aws.price.TYPE = USD` in config, which
 * wins over this table. An estimate, never a bill. The ml.p5e and
 * ml.p6-b200 rows had no list price in the sources read: theirs are rough
 * estimates above ml.p5.48xlarge, to be replaced by aws.price.TYPE.
 */
#include "catalog.h"

#include <string.h>

static const struct aws_instance instances[] = {
	/* type                 accelerator    count  endpoint  hyperpod */
	{ "ml.m5.xlarge", "cpu", 0, 0.23, 0.23 },
	{ "ml.m5.2xlarge", "cpu", 0, 0.461, 0.461 },
	{ "ml.g4dn.xlarge", "nvidia-t4", 1, 0.736, 0 },
	{ "ml.g4dn.12xlarge", "nvidia-t4", 4, 4.89, 0 },
	{ "ml.g5.xlarge", "nvidia-a10g", 1, 1.41, 1.41 },
	{ "ml.g5.12xlarge", "nvidia-a10g", 4, 7.09, 7.09 },
	{ "ml.g5.48xlarge", "nvidia-a10g", 8, 20.36, 20.36 },
	{ "ml.g6.xlarge", "nvidia-l4", 1, 1.01, 1.01 },
	{ "ml.g6.12xlarge", "nvidia-l4", 4, 5.75, 5.75 },
	{ "ml.g6.48xlarge", "nvidia-l4", 8, 16.0, 16.0 },
	{ "ml.p4d.24xlarge", "nvidia-a100-40gb", 8, 37.69, 37.69 },
	{ "ml.p4de.24xlarge", "nvidia-a100-80gb", 8, 47.11, 47.11 },
	{ "ml.p5.48xlarge", "nvidia-h100-80gb", 8, 113.07, 113.07 },
	{ "ml.p5e.48xlarge", "nvidia-h200-141gb", 8, 122.4, 122.4 },
	{ "ml.p6-b200.48xlarge", "nvidia-b200", 8, 136.2, 136.2 },
};

#define NINSTANCES (sizeof(instances) / sizeof(instances[0]))

/* The smallest instance of the family with at least `count` devices:
 * AWS sells GPUs in fixed bundles, so 2 A10Gs is a 4-GPU instance. */
const struct aws_instance *aws_instance_for(const char *accelerator, int count,
					    bool hyperpod)
{
	const struct aws_instance *best = NULL;

	if (!strcmp(accelerator, "cpu"))
		count = 0;
	for (size_t i = 0; i < NINSTANCES; i++) {
		const struct aws_instance *it = &instances[i];

		if (strcmp(it->accelerator, accelerator) != 0 ||
		    it->accelerators < count)
			continue;
		if (hyperpod && it->hyperpod_usd <= 0)
			continue;
		if (!best || it->accelerators < best->accelerators)
			best = it;
	}
	return best;
}

const struct aws_instance *aws_instance_by_type(const char *type)
{
	for (size_t i = 0; i < NINSTANCES; i++) {
		if (!strcmp(instances[i].type, type))
			return &instances[i];
	}
	return NULL;
}

void aws_catalog_render(struct buf *out)
{
	buf_adds(out, "instance types (accelerator x count -> type, USD/h "
		      "endpoint, USD/h HyperPod; us-east-1 list prices "
		      "transcribed 2026-11-28):\n");
	for (size_t i = 0; i < NINSTANCES; i++) {
		const struct aws_instance *it = &instances[i];

		buf_printf(out, "  %s x %d -> %s, %.3f, ", it->accelerator,
			   it->accelerators, it->type, it->endpoint_usd);
		if (it->hyperpod_usd > 0)
			buf_printf(out, "%.3f\n", it->hyperpod_usd);
		else
			buf_adds(out, "not offered\n");
	}
}
