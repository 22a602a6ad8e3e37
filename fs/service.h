/* SPDX-License-Identifier: MIT */
/*
 * Talks to the service manager that started the daemon (systemd's
 * Type=notify, through sd_notify(3)): READY=1 once the mount answers,
 * WATCHDOG=1 while it keeps answering, STOPPING=1 when it goes down.
 * Without a manager (no $NOTIFY_SOCKET) every call is a no-op.
 */
#ifndef INFRAFS_FS_SERVICE_H
#define INFRAFS_FS_SERVICE_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* lock guards stop; the thread waits on cond between watchdog pings. */
struct service {
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop;
	uint64_t watchdog_usec; /* 0: no watchdog asked for */
	char mountpoint[PATH_MAX];
};

/* Starts the thread that reports READY=1 once a request to the mount is
 * answered, so after the request loop runs. Call with the mount made. */
int service_start(struct service *s, const char *mountpoint);
/* STOPPING=1, and no more watchdog pings. */
void service_stopping(struct service *s);
/* Waits for the thread; call once the mount is gone, since the thread
 * may be waiting on it. */
void service_join(struct service *s);

#endif
