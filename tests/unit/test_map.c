// SPDX-License-Identifier: MIT
/* The hash map against a plain array, through random puts and deletes. */
#include "util/map.h"
#include "check.h"

#include <stdint.h>
#include <stdlib.h>

#define KEYS 4096

int main(void)
{
	static uint64_t keys[KEYS];
	static int present[KEYS];
	struct map m = { 0 };
	uint64_t seed = 42;

	for (int i = 0; i < KEYS; i++)
		keys[i] = (uint64_t)i * 7919;
	for (int step = 0; step < 200000; step++) {
		int i;

		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		i = (int)((seed >> 33) % KEYS);
		if ((seed >> 20) & 1) {
			map_put(&m, &keys[i], sizeof(keys[i]), &keys[i]);
			present[i] = 1;
		} else {
			void *v = map_del(&m, &keys[i], sizeof(keys[i]));

			CHECK((v != NULL) == present[i]);
			present[i] = 0;
		}
	}
	{
		size_t n = 0;
		void *v;

		for (int i = 0; i < KEYS; i++) {
			void *got = map_get_u64(&m, &keys[i]);

			CHECK(got == (present[i] ? &keys[i] : NULL));
			n += (size_t)present[i];
		}
		CHECK_INT(m.count, n);
		n = 0;
		for (size_t pos = 0; map_next(&m, &pos, &v);)
			n++;
		CHECK_INT(n, m.count);
	}
	map_free(&m);
	return check_report("map");
}
