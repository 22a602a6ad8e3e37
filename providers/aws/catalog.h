/* SPDX-License-Identifier: MIT */
/* The aws provider's instance-type and price table (catalog.c). */
#ifndef INFRAFS_PROVIDERS_AWS_CATALOG_H
#define INFRAFS_PROVIDERS_AWS_CATALOG_H

#include "util/buf.h"

#include <stdbool.h>

struct aws_instance {
	const char *type; /* "ml.g5.xlarge" */
	const char *accelerator; /* the contract's word: "nvidia-a10g" */
	int accelerators; /* devices per instance, 0 for cpu */
	double endpoint_usd; /* per hour, real-time inference */
	double hyperpod_usd; /* per hour in a HyperPod cluster, 0 = none */
};

/* The smallest instance with at least count devices of the model, or
 * NULL when AWS offers none (or none in HyperPod, when asked). */
const struct aws_instance *aws_instance_for(const char *accelerator, int count,
					    bool hyperpod);

/* The row of an instance type, or NULL when it is not in the table. */
const struct aws_instance *aws_instance_by_type(const char *type);

/* The table as providers/aws shows it. */
void aws_catalog_render(struct buf *out);

#endif
