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
 *
 *   capsule-guest-helper bulk-recv ID          stdin: the bulk port, stdout: a file
 *   capsule-guest-helper bulk-send ID SIZE     stdin: a file, stdout: the bulk port
 *
 * copy one large /files transfer over the `capsule.bulk` virtio-serial port,
 * at C speed instead of the agent's JS cost per HTTP/2 frame. The agent opens
 * both ends and spawns one helper per transfer. Every transfer starts with a
 * header, "CAPSBULK" and the transfer's 32-hex-digit id: recv discards what
 * comes before it (stale bytes of an aborted transfer), send writes it first.
 * recv takes frames until an empty one (see bulk_recv), and gives up when
 * BULK_IDLE_MS pass without a new frame or a buffer's worth of bytes.
 * Built static (no dependency on the guest's libc) and kept tiny on purpose.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <fcntl.h>
#include <linux/random.h>
#include <signal.h>
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

#define BULK_MAGIC "CAPSBULK"
#define BULK_ID_CHARS 32
#define BULK_HEADER_BYTES (8 + BULK_ID_CHARS)
#define BULK_BUFFER_BYTES (1024 * 1024)
#define BULK_MAX_FRAME_BYTES (16 * 1024 * 1024)
#define BULK_IDLE_MS 30000

static char bulk_buffer[BULK_BUFFER_BYTES];

/* The transfer's header from its id and, for a send, its size; 0 when either is malformed. */
static int bulk_args(const char *id, const char *size_text, char *header, unsigned long long *size) {
  if (strlen(id) != BULK_ID_CHARS) return 0;
  for (const char *c = id; *c; c++)
    if (hexval(*c) < 0) return 0;
  if (!*size_text || strspn(size_text, "0123456789") != strlen(size_text) || strlen(size_text) > 18) return 0;
  if (size) *size = strtoull(size_text, NULL, 10);
  memcpy(header, BULK_MAGIC, 8);
  memcpy(header + 8, id, BULK_ID_CHARS);
  return 1;
}

static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, data, length);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

/* A failed write of the file: status 5 when its disk is full (the agent's 507), 1 otherwise. */
static int write_failed(void) {
  int disk_full = errno == ENOSPC || errno == EDQUOT;
  fail("writing the file");
  return disk_full ? 5 : 1;
}

static volatile sig_atomic_t bulk_timed_out;

static void on_alarm(int signal) {
  (void)signal;
  bulk_timed_out = 1;
}

/*
 * One read of the port into `into`: > 0 bytes, or -1 (errno set; ETIMEDOUT
 * once the alarm armed by arm_idle_timer went off). A read of 0 means no host
 * is connected (yet): wait for one. An alarm rather than poll(2) before each
 * read: a read returns 4 KiB at most, and under TCG every system call counts.
 */
static ssize_t read_port(char *into, size_t room) {
  static struct timespec pause = {0, 2000000};
  for (;;) {
    if (bulk_timed_out) return errno = ETIMEDOUT, -1;
    ssize_t n = read(0, into, room);
    if (n > 0) return n;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return -1;
    if (n == 0) nanosleep(&pause, NULL);
  }
}

/* Fails the transfer when BULK_IDLE_MS pass before the next call: called at each frame's start. */
static void arm_idle_timer(void) {
  static int installed;
  if (!installed) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_alarm; /* no SA_RESTART: a blocked read returns EINTR */
    sigaction(SIGALRM, &action, NULL);
    installed = 1;
  }
  alarm(BULK_IDLE_MS / 1000);
}

/*
 * Writes a framed upload to the file on stdout: frames of a 4-byte big-endian
 * length and that many bytes, ended by an empty frame; the body's size need not
 * be known when it starts (a multipart or chunked upload). Anything after the
 * end is ignored. Until the end frame nothing is taken as complete: a transfer
 * cut short fails, and the agent drops the file.
 */
static int bulk_recv(const char *id) {
  char header[BULK_HEADER_BYTES];
  if (!bulk_args(id, "0", header, NULL)) return fprintf(stderr, "capsule-guest-helper: bad bulk-recv arguments\n"), 2;
  static char in[64 * 1024];
  size_t have = 0; /* bytes in `in` */
  arm_idle_timer();
  /* Until the header: anything else is discarded, keeping a tail that may hold its start. */
  for (;;) {
    ssize_t n = read_port(in + have, sizeof in - have);
    if (n < 0) return fail("reading the bulk port");
    have += (size_t)n;
    char *found = memmem(in, have, header, BULK_HEADER_BYTES);
    if (found) {
      size_t after = (size_t)(found - in) + BULK_HEADER_BYTES;
      have -= after;
      memmove(in, in + after, have);
      break;
    }
    if (have >= BULK_HEADER_BYTES) {
      memmove(in, in + have - (BULK_HEADER_BYTES - 1), BULK_HEADER_BYTES - 1);
      have = BULK_HEADER_BYTES - 1;
    }
  }
  /* Frame payloads gather in bulk_buffer, written a full buffer at a time (a port read returns 4 KiB at most). */
  size_t out = 0;
  unsigned long frame_left = 0;
  unsigned char length[4];
  int length_have = 0;
  for (;;) {
    for (size_t i = 0; i < have;) {
      if (frame_left == 0) {
        length[length_have++] = (unsigned char)in[i++];
        if (length_have < 4) continue;
        length_have = 0;
        frame_left = (unsigned long)length[0] << 24 | (unsigned long)length[1] << 16 | (unsigned long)length[2] << 8 | length[3];
        if (frame_left > BULK_MAX_FRAME_BYTES) return fprintf(stderr, "capsule-guest-helper: a frame of %lu bytes\n", frame_left), 3;
        if (frame_left == 0) goto end;
        arm_idle_timer();
        continue;
      }
      size_t take = have - i;
      if (take > frame_left) take = (size_t)frame_left;
      if (take > sizeof bulk_buffer - out) take = sizeof bulk_buffer - out;
      memcpy(bulk_buffer + out, in + i, take);
      out += take;
      i += take;
      frame_left -= take;
      if (out == sizeof bulk_buffer) {
        if (write_all(1, bulk_buffer, out) != 0) return write_failed();
        out = 0;
      }
    }
    ssize_t n = read_port(in, sizeof in);
    if (n < 0) return fail("reading the bulk port");
    have = (size_t)n;
  }
end:
  if (out > 0 && write_all(1, bulk_buffer, out) != 0) return write_failed();
  return 0;
}

static int bulk_send(const char *id, const char *size_text) {
  char header[BULK_HEADER_BYTES];
  unsigned long long left;
  if (!bulk_args(id, size_text, header, &left)) return fprintf(stderr, "capsule-guest-helper: bad bulk-send arguments\n"), 2;
  if (write_all(1, header, sizeof header) != 0) return fail("writing the bulk port");
  while (left > 0) {
    ssize_t n = read(0, bulk_buffer, left < sizeof bulk_buffer ? (size_t)left : sizeof bulk_buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("reading the file");
    if (n == 0) return fprintf(stderr, "capsule-guest-helper: the file ended %llu bytes early\n", left), 4;
    if (write_all(1, bulk_buffer, (size_t)n) != 0) return fail("writing the bulk port");
    left -= (unsigned long long)n;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "serve") == 0) return serve();
  if (argc == 3 && strcmp(argv[1], "bulk-recv") == 0) return bulk_recv(argv[2]);
  if (argc == 4 && strcmp(argv[1], "bulk-send") == 0) return bulk_send(argv[2], argv[3]);
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
  fprintf(stderr, "usage: capsule-guest-helper [settime SECONDS NANOSECONDS] [reseed HEX] ... | serve | bulk-recv ID | bulk-send ID SIZE\n");
  return 2;
}
