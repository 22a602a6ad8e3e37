// SPDX-License-Identifier: MIT
/*
 * What GPU feature discovery calls each accelerator. GFD labels a node
 * nvidia.com/gpu.product with the GPU's name as NVML reports it, spaces
 * made dashes: "NVIDIA A100-SXM4-80GB" becomes NVIDIA-A100-SXM4-80GB.
 * Drivers before 510 left out the "NVIDIA " of data-centre parts, and
 * one model comes as SXM and PCIe boards, so an accelerator has several
 * names. The list is exact on purpose: a time-shared GPU (-SHARED) or a
 * MIG slice (-MIG-1g.10gb) is not the whole GPU a pool declares, and a
 * word match would take an A10 for an A10G.
 */
#include "objects.h"

#include <stddef.h>
#include <string.h>

static const struct {
	const char *accelerator;
	const char *const products[6];
} table[] = {
	{ "nvidia-t4", { "Tesla-T4", "NVIDIA-T4", NULL } },
	{ "nvidia-l4", { "NVIDIA-L4", NULL } },
	{ "nvidia-a10g", { "NVIDIA-A10G", NULL } },
	{ "nvidia-a100-40gb",
	  { "NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB", "A100-SXM4-40GB",
	    "A100-PCIE-40GB", NULL } },
	{ "nvidia-a100-80gb",
	  { "NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe", "A100-SXM-80GB",
	    "A100-80GB-PCIe", NULL } },
	{ "nvidia-h100-80gb",
	  { "NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe", NULL } },
	{ "nvidia-h200-141gb", { "NVIDIA-H200", "NVIDIA-H200-NVL", NULL } },
	{ "nvidia-b200", { "NVIDIA-B200", NULL } },
};

const char *const *kube_gpu_products(const char *accelerator)
{
	for (size_t i = 0; accelerator && i < sizeof(table) / sizeof(table[0]);
	     i++) {
		if (!strcmp(table[i].accelerator, accelerator))
			return table[i].products;
	}
	return NULL;
}

bool kube_gpu_product_is(const char *accelerator, const char *product)
{
	const char *const *names = kube_gpu_products(accelerator);

	for (; names && product && *names; names++) {
		if (!strcmp(*names, product))
			return true;
	}
	return false;
}

void kube_gpu_products_render(struct buf *out)
{
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		buf_printf(out, "  %s:", table[i].accelerator);
		for (size_t j = 0; table[i].products[j]; j++)
			buf_printf(out, " %s", table[i].products[j]);
		buf_adds(out, "\n");
	}
}
