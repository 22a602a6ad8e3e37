// SPDX-License-Identifier: MIT
#include "service.h"

#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#else
/* Built without libsystemd: nothing to tell, and a unit of Type=notify
 * would wait for READY=1 in vain, so say so once at start. */
static int sd_notify(int unset_environment, const char *state)
{
	(void)unset_environment;
	(void)state;
	return 0;
}

static int sd_watchdog_enabled(int unset_environment, uint64_t *usec)
{
	(void)unset_environment;
	*usec = 0;
	return 0;
}
#endif

#define FUSE_SUPER_MAGIC 0x65735546

/*
 * statfs(2) of the mount point always reaches the request loop (the
 * kernel caches no answer), so its coming back means a worker took a
 * request and replied: the mount answers.
 */
static bool mount_answers(const char *mountpoint)
{
	struct statfs st;

	return statfs(mountpoint, &st) == 0 &&
	       (unsigned long)st.f_type == FUSE_SUPER_MAGIC;
}

static bool stopping(struct service *s)
{
	bool stop;

	pthread_mutex_lock(&s->lock);
	stop = s->stop;
	pthread_mutex_unlock(&s->lock);
	return stop;
}

/* Sleeps half the watchdog period, as sd_watchdog_enabled(3) advises;
 * false once asked to stop. */
static bool wait_period(struct service *s)
{
	struct timespec until;
	uint64_t ns = s->watchdog_usec * 1000 / 2;
	bool stop;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)(ns / 1000000000);
	until.tv_nsec += (long)(ns % 1000000000);
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&s->lock);
	while (!s->stop &&
	       pthread_cond_timedwait(&s->cond, &s->lock, &until) != ETIMEDOUT)
		;
	stop = s->stop;
	pthread_mutex_unlock(&s->lock);
	return !stop;
}

static void *service_main(void *arg)
{
	struct service *s = arg;
	char status[PATH_MAX + 32];

	/* The first statfs waits until the request loop serves it. */
	while (!mount_answers(s->mountpoint)) {
		if (stopping(s))
			return NULL;
		nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
	}
	if (stopping(s))
		return NULL;
	snprintf(status, sizeof(status), "READY=1\nSTATUS=serving %s",
		 s->mountpoint);
	sd_notify(0, status);
	/* A hung request loop stops the pings, and the manager restarts
	 * the daemon: the probe goes through the loop like any request. */
	while (s->watchdog_usec && wait_period(s)) {
		if (mount_answers(s->mountpoint) && !stopping(s))
			sd_notify(0, "WATCHDOG=1");
	}
	return NULL;
}

int service_start(struct service *s, const char *mountpoint)
{
	pthread_condattr_t attr;
	int rc;

	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &attr);
	pthread_condattr_destroy(&attr);
	snprintf(s->mountpoint, sizeof(s->mountpoint), "%s", mountpoint);
	if (!getenv("NOTIFY_SOCKET"))
		return 0;
#ifndef HAVE_LIBSYSTEMD
	log_warn("built without libsystemd: cannot tell the service manager "
		 "the mount is ready; use Type=exec");
	return 0;
#endif
	if (sd_watchdog_enabled(0, &s->watchdog_usec) <= 0)
		s->watchdog_usec = 0;
	rc = pthread_create(&s->thread, NULL, service_main, s);
	if (rc)
		return -rc;
	s->running = true;
	return 0;
}

void service_stopping(struct service *s)
{
	if (!s->mountpoint[0])
		return;
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	if (s->running)
		sd_notify(0, "STOPPING=1");
}

void service_join(struct service *s)
{
	if (!s->mountpoint[0])
		return; /* never started */
	if (s->running)
		pthread_join(s->thread, NULL);
	s->running = false;
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
}
