/* LD_PRELOAD shim of the slow-disk tests: fsync and fdatasync sleep for the milliseconds written in the file
 * named by $SIMSEARCH_FSYNC_DELAY_FILE (read at every call, so a test turns the stall on and off), then sync. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void stall(void) {
    const char *name = getenv("SIMSEARCH_FSYNC_DELAY_FILE");
    long ms = 0;
    FILE *file;
    if (name == NULL || (file = fopen(name, "r")) == NULL) return;
    if (fscanf(file, "%ld", &ms) != 1) ms = 0;
    fclose(file);
    if (ms > 0) {
        struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    stall();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int) = NULL;
    if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    stall();
    return real(fd);
}
