// SPDX-License-Identifier: MIT
/*
 * file_watch_changed() on files changed as editors and rotation tools
 * change them: written in place, renamed over, removed and made again,
 * and in a folder that appears only later.
 */
#include "tests/unit/check.h"
#include "util/filewatch.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/infrafs-filewatch.XXXXXX";

static void put(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
}

static const char *at(const char *name)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

int main(void)
{
	struct file_watch w;
	char other[512];

	if (!mkdtemp(dir))
		return 1;
	put("config", "one\n");
	file_watch_init(&w, at("config"));
	CHECK(!file_watch_changed(&w));
	CHECK(!file_watch_changed(&w));

	put("config", "two, longer\n");
	CHECK(file_watch_changed(&w));
	CHECK(!file_watch_changed(&w));

	/* Renamed over: a new inode in the same folder. */
	put("config.new", "three\n");
	snprintf(other, sizeof(other), "%s", at("config.new"));
	CHECK(rename(other, at("config")) == 0);
	CHECK(file_watch_changed(&w));
	CHECK(!file_watch_changed(&w));

	/* Another file of the folder is no change of this one. */
	put("unrelated", "x\n");
	CHECK(!file_watch_changed(&w));

	CHECK(unlink(at("config")) == 0);
	CHECK(file_watch_changed(&w));
	CHECK(!file_watch_changed(&w));
	put("config", "back\n");
	CHECK(file_watch_changed(&w));
	file_watch_free(&w);

	/* A folder that does not exist yet: the stat sees the file come. */
	file_watch_init(&w, at("later/config"));
	CHECK(!file_watch_changed(&w));
	mkdir(at("later"), 0700);
	put("later/config", "now\n");
	CHECK(file_watch_changed(&w));
	CHECK(!file_watch_changed(&w));
	file_watch_free(&w);

	/* No path: nothing ever changes. */
	file_watch_init(&w, NULL);
	CHECK(!file_watch_changed(&w));
	file_watch_free(&w);

	unlink(at("later/config"));
	rmdir(at("later"));
	unlink(at("config"));
	unlink(at("unrelated"));
	rmdir(dir);
	return check_report("filewatch");
}
