/* SPDX-License-Identifier: MIT */
/*
 * The devices of this machine that local pools reserve: GPUs found by
 * nvidia-smi's CSV query, and CPU slots. Discovery runs at start and on
 * refresh, never in a FUSE request.
 */
#ifndef INFRAFS_PROVIDERS_LOCAL_DEVICES_H
#define INFRAFS_PROVIDERS_LOCAL_DEVICES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gpu {
	unsigned
		index; /* nvidia-smi's index, what CUDA_VISIBLE_DEVICES takes */
	char uuid[64]; /* GPU-xxxxxxxx-... */
	char name[96]; /* as nvidia-smi reports it: NVIDIA H100 80GB HBM3 */
	char accelerator[32]; /* the schema's word: nvidia-h100-80gb, or "" */
	int64_t memory_total_mib; /* -1 when not reported */
	int64_t memory_used_mib; /* -1 when not reported */
	int utilization_pct; /* -1 when not reported ("[N/A]") */
};

struct gpu_list {
	struct gpu *v;
	size_t n;
};

/*
 * The query infrafs runs; its output is what gpu_parse_csv() reads.
 * nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,
 * utilization.gpu --format=csv,noheader,nounits
 * Holds the arguments after the program name, NULL-terminated.
 */
extern const char *const gpu_query_args[];

/*
 * Parses the CSV nvidia-smi prints for gpu_query_args (no header, no
 * units; fields separated by ", "; "[N/A]" or "[Not Supported]" for a
 * value the hardware does not report). Lines that do not parse are
 * skipped and counted in *skipped. Returns 0 or -ENOMEM.
 */
int gpu_parse_csv(const char *text, size_t len, struct gpu_list *out,
		  size_t *skipped);

/*
 * Runs the query and parses it. `command` is the nvidia-smi to run: NULL
 * means "nvidia-smi" from PATH. When the environment variable
 * INFRAFS_NVIDIA_SMI names a file, that file's contents are read instead
 * of running anything (tests point it at a recorded output). No
 * nvidia-smi on the machine is not an error: the list is empty.
 * Returns 0, or a negative errno with err filled when nvidia-smi ran and
 * failed.
 */
int gpu_discover(const char *command, struct gpu_list *out, char *err,
		 size_t errlen);

/* The schema's accelerator word for an nvidia-smi name, or NULL. */
const char *gpu_accelerator_of(const char *name);

void gpu_list_free(struct gpu_list *l);

/* CPU slots a cpu pool may reserve: the CPUs this process may run on. */
unsigned cpu_slots(void);

#endif
