/*
 * capsule-guest-helper: the few system calls the guest agent (node) cannot
 * make itself, run after a sandbox is restored from a snapshot:
 *
 *   capsule-guest-helper settime SECONDS NANOSECONDS   set CLOCK_REALTIME
 *   capsule-guest-helper reseed HEX                    credit HEX as entropy and reseed the CRNG
 *
 * Several commands may follow each other in one call: `settime S N reseed HEX`.
 *
 *   capsule-guest-helper serve
 *
 * reads the same commands one per line on stdin and answers each with "ok" or
 * "error: ..." on stdout. The agent starts it once at boot, so a restore (when
 * starting a process under TCG costs tens of milliseconds) only writes a line.
 * A restored guest's clock is the snapshot's and its random pool is a copy of
 * every other clone's, so both are fixed before the sandbox is handed out.
 * Built static (no dependency on the guest's libc) and kept tiny on purpose.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_ENTROPY_BYTES 512

static int fail(const char *what) {
  fprintf(stderr, "capsule-guest-helper: %s: %s\n", what, strerror(errno));
  return 1;
}

static int run_commands(int argc, char **argv);

/* One command per line; answers "ok" or "error: <why>" (the details go to stderr). */
static int serve(void) {
  char line[2048];
  setvbuf(stdout, NULL, _IOLBF, 0);
  while (fgets(line, sizeof line, stdin)) {
    size_t len = strlen(line);
    if (len == sizeof line - 1 && line[len - 1] != '\n') {
      int c;
      while ((c = getchar()) != EOF && c != '\n') {}
      printf("error: line too long\n");
      continue;
    }
    char *args[8];
    int n = 1;
    args[0] = "serve";
    for (char *tok = strtok(line, " \t\r\n"); tok && n < 8; tok = strtok(NULL, " \t\r\n")) args[n++] = tok;
    if (n == 1) continue;
    int rc = run_commands(n, args);
    if (rc == 0) printf("ok\n");
    else printf("error: %s failed (code %d)\n", args[1], rc);
  }
  return 0;
}

static int settime(const char *seconds, const char *nanoseconds) {
  char *end;
  struct timespec ts;
  errno = 0;
  ts.tv_sec = strtoll(seconds, &end, 10);
  if (errno || *end) return fprintf(stderr, "capsule-guest-helper: bad seconds\n"), 2;
  ts.tv_nsec = strtol(nanoseconds, &end, 10);
  if (errno || *end || ts.tv_nsec < 0 || ts.tv_nsec >= 1000000000L) return fprintf(stderr, "capsule-guest-helper: bad nanoseconds\n"), 2;
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) return fail("clock_settime");
  return 0;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int reseed(const char *hex) {
  size_t len = strlen(hex);
  if (len == 0 || len % 2 || len / 2 > MAX_ENTROPY_BYTES) return fprintf(stderr, "capsule-guest-helper: bad entropy\n"), 2;
  struct {
    int entropy_count;
    int buf_size;
    unsigned char buf[MAX_ENTROPY_BYTES];
  } info;
  info.buf_size = (int)(len / 2);
  info.entropy_count = info.buf_size * 8;
  for (size_t i = 0; i < len / 2; i++) {
    int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return fprintf(stderr, "capsule-guest-helper: bad entropy\n"), 2;
    info.buf[i] = (unsigned char)(hi << 4 | lo);
  }
  int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) return fail("open /dev/urandom");
  if (ioctl(fd, RNDADDENTROPY, &info) != 0) return fail("RNDADDENTROPY");
  if (ioctl(fd, RNDRESEEDCRNG) != 0) return fail("RNDRESEEDCRNG");
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "serve") == 0) return serve();
  return run_commands(argc, argv);
}

static int run_commands(int argc, char **argv) {
  int i = 1;
  if (argc < 2) goto usage;
  while (i < argc) {
    int rc;
    if (strcmp(argv[i], "settime") == 0 && i + 2 < argc) {
      rc = settime(argv[i + 1], argv[i + 2]);
      i += 3;
    } else if (strcmp(argv[i], "reseed") == 0 && i + 1 < argc) {
      rc = reseed(argv[i + 1]);
      i += 2;
    } else {
      goto usage;
    }
    if (rc != 0) return rc;
  }
  return 0;
usage:
  fprintf(stderr, "usage: capsule-guest-helper [settime SECONDS NANOSECONDS] [reseed HEX] ... | serve\n");
  return 2;
}
