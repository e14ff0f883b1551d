/*
 * loadgen: a load generator for the herd's TCP line protocol, and for Redis (RESP) as a reference (Linux, epoll, libc only).
 *
 *   mkdir -p bench/.build && gcc -O2 -Wall -Wextra -o bench/.build/loadgen bench/loadgen.c
 *
 * Modes: rr, pipelined, halfclose, propagation, startup, fill. See bench/LOADGEN.md or `loadgen --help`.
 * One mode per process; the result is one JSON object on stdout, progress and errors go to stderr.
 * It only ever connects to 127.0.0.1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000ull
#define MAX_PORTS 64
#define MAX_ERROR_MESSAGES 20
#define DEFAULT_LOCATION "+34.068930-118.445127"

/* ------------------------------------------------------------------------------------------------ */
/* Options                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

enum mode { M_RR, M_PIPELINED, M_HALFCLOSE, M_PROPAGATION, M_STARTUP, M_FILL };
enum command { C_IAMAT, C_WHATSAT };
enum protocol { P_LINE, P_RESP };

static struct {
  enum mode mode;
  const char *mode_name;
  int ports[MAX_PORTS];
  int nports;
  unsigned connections;
  unsigned depth;
  double duration_s;
  double warmup_s;
  enum command command;
  unsigned clients_per_conn;
  const char *whatsat_id;
  const char *radius;
  const char *bound;
  bool whatsat_cold;
  bool seed;
  const char *location;
  const char *id_prefix;
  double rate;
  unsigned concurrency;
  int from_port, to_port;
  unsigned samples;
  long timeout_ms;
  double interval_ms;
  uint64_t clients;
  double max_time_s;
  bool time_base_set;
  uint64_t time_base_s;
  bool quiet;
  enum protocol protocol;
  unsigned wait_replicas;
  unsigned wait_timeout_ms;
  unsigned value_bytes;
  bool echo;
  int server_pids[MAX_PORTS];
  int nserver_pids;
} opt = {
    .connections = 1,
    .depth = 0, /* 0 = mode default */
    .duration_s = 10,
    .warmup_s = 1,
    .command = C_IAMAT,
    .clients_per_conn = 100,
    .whatsat_id = "loadgen-w",
    .radius = "10",
    .bound = "5",
    .seed = true,
    .location = DEFAULT_LOCATION,
    .id_prefix = NULL,
    .concurrency = 1,
    .samples = 100,
    .timeout_ms = -1,
    .clients = 0,
    .max_time_s = 0,
    .protocol = P_LINE,
    .wait_replicas = 0,
    .wait_timeout_ms = 500,
    .value_bytes = 77,
};

static void usage(FILE *f) {
  fprintf(f,
          "Usage: loadgen MODE [options]   (connects to 127.0.0.1 only; JSON result on stdout)\n"
          "Modes:\n"
          "  rr | pipelined   persistent connections, --depth commands in flight each (rr: default depth 1,\n"
          "                   pipelined: default depth 16)\n"
          "  halfclose        one command per connection: connect, write, shutdown(SHUT_WR), read to EOF\n"
          "  propagation      IAMAT to --from-port, poll WHATSAT on --to-port until it shows the new time\n"
          "  startup          poll connect() every 0.2 ms until --port accepts; print the wall-clock time\n"
          "  fill             --clients distinct IAMATs (ids m<i>) as fast as possible, then stop\n"
          "Options:\n"
          "  --host 127.0.0.1          the only address accepted\n"
          "  --port P                  server port; repeat to spread connections round-robin over ports\n"
          "  --connections N           persistent connections (rr, pipelined, fill; default 1)\n"
          "  --depth D                 commands in flight per connection\n"
          "  --duration S              measured seconds (default 10)\n"
          "  --warmup S                unmeasured seconds before that (default 1)\n"
          "  --command iamat|whatsat   what to send (default iamat)\n"
          "  --clients-per-connection K  IAMAT ids c<conn>-<k>, k cycling over 0..K-1 (default 100)\n"
          "  --id-prefix STR           replaces the 'c' of c<conn>-<k> (or the 'm' of fill's m<i>)\n"
          "  --location LOC            IAMAT location (default " DEFAULT_LOCATION ")\n"
          "  --time-base SECONDS       IAMAT times are SECONDS.<ns counter> (default: wall clock at start)\n"
          "  --whatsat-id ID --radius R --bound B   the WHATSAT sent (default loadgen-w 10 5)\n"
          "  --whatsat-cold            vary the radius per command (1.000..50.000 km) so every one misses a cache\n"
          "  --no-seed                 do not send one IAMAT for --whatsat-id to each port before a WHATSAT run\n"
          "  --rate R                  target commands (or exchanges) per second in total; 0 = unpaced (default)\n"
          "  --concurrency N           halfclose exchanges at once (default 1)\n"
          "  --from-port P --to-port P --samples N --interval-ms MS   propagation (default 100 samples)\n"
          "  --timeout-ms T            startup: give up after T ms (default 10000);\n"
          "                            propagation: per sample (default 5000)\n"
          "  --clients N               fill: number of distinct clients\n"
          "  --max-time S              hard cap for fill and propagation (defaults 600 and samples*timeout+10)\n"
          "  --protocol line|resp      line: the herd's protocol (default); resp: Redis, each command\n"
          "                            SET <key> <value> (+ WAIT, see below); rr and pipelined only\n"
          "  --wait-replicas N         resp: send WAIT N <ms> with each SET (default 0: SET alone)\n"
          "  --wait-timeout-ms MS      resp: the WAIT's timeout (default 500)\n"
          "  --value-bytes N           resp: length of each SET's value (default 77)\n"
          "  --echo                    the server echoes each line (a reference echo server): a reply must\n"
          "                            be the command itself (IAMAT only)\n"
          "  --server-pid PID          report the CPU time (user+system, /proc/PID/stat) of these server\n"
          "                            processes over the measured window; repeatable\n"
          "  --quiet                   no progress lines on stderr\n");
}

static void die_usage(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("loadgen: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fputs("Try: loadgen --help\n", stderr);
  exit(2);
}

static double parse_double(const char *name, const char *s, double lo, double hi) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v >= lo && v <= hi)) die_usage("%s: expected a number in [%g, %g], got '%s'", name, lo, hi, s);
  return v;
}

static uint64_t parse_u64(const char *name, const char *s, uint64_t lo, uint64_t hi) {
  char *end;
  errno = 0;
  if (*s < '0' || *s > '9') die_usage("%s: expected an integer, got '%s'", name, s);
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) die_usage("%s: expected an integer in [%llu, %llu], got '%s'", name, (unsigned long long)lo, (unsigned long long)hi, s);
  return v;
}

static int parse_port(const char *name, const char *s) { return (int)parse_u64(name, s, 1, 65535); }

static bool is_field(const char *s) {
  if (!*s) return false;
  for (; *s; s++)
    if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\f' || *s == '\v') return false;
  return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* Time, errors, CPU                                                                                */
/* ------------------------------------------------------------------------------------------------ */

static inline uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static inline uint64_t real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t g_errors, g_invalid, g_error_messages, g_invalid_messages;
static volatile sig_atomic_t g_interrupted;

static void note_error(const char *fmt, ...) {
  g_errors++;
  if (g_error_messages >= MAX_ERROR_MESSAGES) return;
  if (++g_error_messages == MAX_ERROR_MESSAGES) {
    fputs("loadgen: error: (further error messages suppressed; see the count in the report)\n", stderr);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  fputs("loadgen: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void note_invalid(const char *why, const char *reply, size_t len) {
  g_invalid++;
  if (g_invalid_messages >= MAX_ERROR_MESSAGES) return;
  if (++g_invalid_messages == MAX_ERROR_MESSAGES) {
    fputs("loadgen: invalid reply: (further messages suppressed)\n", stderr);
    return;
  }
  if (len > 200) len = 200;
  fprintf(stderr, "loadgen: invalid reply (%s): %.*s\n", why, (int)len, reply);
}

struct cpu_mark {
  uint64_t mono;
  double user, sys;
};

static struct cpu_mark cpu_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  struct cpu_mark m;
  m.mono = mono_ns();
  m.user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
  m.sys = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  return m;
}

/* CPU time of the --server-pid processes (all their threads), from /proc/<pid>/stat: utime and stime, fields 14
 * and 15, in clock ticks. The command name (field 2) may hold spaces and parentheses, so fields are counted from
 * the last ')'. */
struct server_cpu_mark {
  bool ok;
  int failed_pid;
  unsigned long long utime, stime; /* clock ticks, summed over the processes */
};

static struct server_cpu_mark server_cpu_now(void) {
  struct server_cpu_mark m = {.ok = true};
  for (int i = 0; i < opt.nserver_pids; i++) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", opt.server_pids[i]);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    char *p = n ? strrchr(buf, ')') : NULL;
    unsigned long long ut = 0, st = 0;
    /* After ')': state (3), ppid, pgrp, session, tty_nr, tpgid, flags, minflt, cminflt, majflt, cmajflt, utime (14), stime (15). */
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2) {
      m.ok = false;
      m.failed_pid = opt.server_pids[i];
      return m;
    }
    m.utime += ut;
    m.stime += st;
  }
  return m;
}

static void json_server_cpu(FILE *f, struct server_cpu_mark a, struct server_cpu_mark b, double wall_s, uint64_t commands) {
  fputs(",\"server_cpu\":{\"pids\":[", f);
  for (int i = 0; i < opt.nserver_pids; i++) fprintf(f, "%s%d", i ? "," : "", opt.server_pids[i]);
  fputc(']', f);
  if (!a.ok || !b.ok) {
    fprintf(f, ",\"error\":\"cannot read /proc/%d/stat\"}", a.ok ? b.failed_pid : a.failed_pid);
    return;
  }
  double tick = (double)sysconf(_SC_CLK_TCK);
  double user = (double)(b.utime - a.utime) / tick, sys = (double)(b.stime - a.stime) / tick;
  fprintf(f, ",\"user_s\":%.2f,\"sys_s\":%.2f,\"cpu_s\":%.2f,\"cpu_percent_of_one_core\":%.1f,\"wall_s\":%.3f,\"us_per_command\":", user,
          sys, user + sys, wall_s > 0 ? (user + sys) / wall_s * 100.0 : 0.0, wall_s);
  if (commands) fprintf(f, "%.2f}", (user + sys) * 1e6 / (double)commands);
  else fputs("null}", f);
}

static void on_signal(int sig) {
  (void)sig;
  g_interrupted = 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* Log-linear latency histogram (HDR style): exact below 256 ns, then 128 linear sub-buckets per   */
/* power of two, so a bucket is at most 1/128 of its value wide; reported values are bucket        */
/* midpoints (error <= 0.4%), clamped to the exact min and max.                                     */
/* ------------------------------------------------------------------------------------------------ */

#define H_BUCKETS (256 + 56 * 128)

struct hist {
  uint64_t b[H_BUCKETS];
  uint64_t n, sum, min, max;
};

static struct hist g_hist = {.min = UINT64_MAX};

static inline unsigned h_index(uint64_t v) {
  if (v < 256) return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v);
  return 256u + (e - 8u) * 128u + (unsigned)((v >> (e - 7u)) & 127u);
}

static inline void hist_add(struct hist *h, uint64_t v) {
  h->b[h_index(v)]++;
  h->n++;
  h->sum += v;
  if (v < h->min) h->min = v;
  if (v > h->max) h->max = v;
}

static double hist_quantile(const struct hist *h, double q) {
  if (!h->n) return 0;
  uint64_t rank = (uint64_t)(q * (double)h->n);
  if ((double)rank < q * (double)h->n) rank++;
  if (rank < 1) rank = 1;
  if (rank > h->n) rank = h->n;
  uint64_t seen = 0;
  for (unsigned i = 0; i < H_BUCKETS; i++) {
    seen += h->b[i];
    if (seen >= rank) {
      double v;
      if (i < 256) {
        v = i;
      } else {
        unsigned j = i - 256, e = j / 128 + 8;
        uint64_t lower = (uint64_t)(128 + j % 128) << (e - 7), width = 1ull << (e - 7);
        v = (double)lower + (double)(width - 1) / 2.0;
      }
      if (v < (double)h->min) v = (double)h->min;
      if (v > (double)h->max) v = (double)h->max;
      return v;
    }
  }
  return (double)h->max;
}

/* ------------------------------------------------------------------------------------------------ */
/* JSON output                                                                                      */
/* ------------------------------------------------------------------------------------------------ */

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
    else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
    else fputc(ch, f);
  }
  fputc('"', f);
}

static void json_latency(FILE *f, const struct hist *h) {
  if (!h->n) {
    fputs("\"latency_us\":{\"p50\":null,\"p90\":null,\"p99\":null,\"p999\":null,\"max\":null,\"mean\":null,\"min\":null}", f);
    return;
  }
  fprintf(f, "\"latency_us\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f,\"mean\":%.2f,\"min\":%.2f}",
          hist_quantile(h, 0.50) / 1e3, hist_quantile(h, 0.90) / 1e3, hist_quantile(h, 0.99) / 1e3,
          hist_quantile(h, 0.999) / 1e3, (double)h->max / 1e3, (double)h->sum / (double)h->n / 1e3, (double)h->min / 1e3);
}

static void json_cpu(FILE *f, struct cpu_mark a, struct cpu_mark b) {
  double user = b.user - a.user, sys = b.sys - a.sys, wall = (double)(b.mono - a.mono) / 1e9;
  fprintf(f, "\"loadgen_cpu\":{\"user_s\":%.3f,\"sys_s\":%.3f,\"cpu_percent_of_one_core\":%.1f,\"wall_s\":%.3f}", user, sys,
          wall > 0 ? (user + sys) / wall * 100.0 : 0.0, wall);
}

static void json_ports(FILE *f) {
  fputs("\"ports\":[", f);
  for (int i = 0; i < opt.nports; i++) fprintf(f, "%s%d", i ? "," : "", opt.ports[i]);
  fputc(']', f);
}

/* ------------------------------------------------------------------------------------------------ */
/* Sockets                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

static int socket_connect(int port, int *err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1, always */
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
    *err = 0;
  } else if (errno == EINPROGRESS || errno == EINTR) {
    *err = EINPROGRESS;
  } else {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

static int socket_error(int fd) {
  int e = 0;
  socklen_t len = sizeof e;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0) return errno;
  return e;
}

/* Waits for fd until `events` or the deadline (monotonic ns). 1 ready, 0 timeout, -1 error. */
static int wait_fd(int fd, short events, uint64_t deadline) {
  for (;;) {
    uint64_t now = mono_ns();
    if (now >= deadline) return 0;
    if (g_interrupted) return -1;
    struct pollfd p = {.fd = fd, .events = events};
    int ms = (int)((deadline - now + 999999) / 1000000);
    int r = poll(&p, 1, ms);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return -1;
  }
}

/* Blocking-style connect with a deadline; returns a non-blocking fd or -1 (error noted). */
static int connect_wait(int port, uint64_t deadline) {
  int err;
  int fd = socket_connect(port, &err);
  if (fd < 0) {
    note_error("connect 127.0.0.1:%d: %s", port, strerror(err));
    return -1;
  }
  if (err == EINPROGRESS) {
    int r = wait_fd(fd, POLLOUT, deadline);
    err = r == 1 ? socket_error(fd) : r == 0 ? ETIMEDOUT : EINTR;
    if (err) {
      note_error("connect 127.0.0.1:%d: %s", port, strerror(err));
      close(fd);
      return -1;
    }
  }
  return fd;
}

static bool write_all_wait(int fd, const char *buf, size_t len, uint64_t deadline) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(fd, buf + off, len - off);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_fd(fd, POLLOUT, deadline) != 1) {
        note_error("write: timed out");
        return false;
      }
    } else {
      note_error("write: %s", n < 0 ? strerror(errno) : "wrote nothing");
      return false;
    }
  }
  return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* Incremental reply framing                                                                        */
/* ------------------------------------------------------------------------------------------------ */

/* State for the reply at the start of a buffer: an AT line answering a WHATSAT is followed by a JSON
 * body ended by an empty line ("\n\n"); every other reply (an IAMAT's AT line, "? ...") is one line. */
struct pstate {
  size_t scan;     /* where to continue searching, relative to the reply start */
  size_t line_len; /* length of the first line, without its "\n" */
  int phase;       /* 0: in the first line, 1: in the body */
};

/* The first "\n\n" in p[0..n), or NULL. (glibc's memmem is a byte loop for short needles; memchr per
 * line is much faster on indented JSON.) */
static const char *find_blank_line(const char *p, size_t n) {
  const char *end = p + n;
  while (p + 1 < end) {
    const char *q = memchr(p, '\n', (size_t)(end - p - 1));
    if (!q) return NULL;
    if (q[1] == '\n') return q;
    p = q + 1;
  }
  return NULL;
}

/* Returns the length of the complete reply at p[0..n), or 0 if more bytes are needed. */
static size_t reply_len(const char *p, size_t n, struct pstate *s, bool whatsat) {
  if (s->phase == 0) {
    const char *nl = s->scan < n ? memchr(p + s->scan, '\n', n - s->scan) : NULL;
    if (!nl) {
      s->scan = n;
      return 0;
    }
    s->line_len = (size_t)(nl - p);
    if (!whatsat || s->line_len < 3 || memcmp(p, "AT ", 3) != 0) {
      size_t total = s->line_len + 1;
      s->scan = 0;
      return total;
    }
    s->phase = 1;
    s->scan = s->line_len; /* the AT line's own "\n" may start the "\n\n" */
  }
  const char *q = find_blank_line(p + s->scan, n - s->scan);
  if (!q) {
    s->scan = n - 1; /* a "\n" at the very end may pair with the next byte */
    return 0;
  }
  size_t total = (size_t)(q - p) + 2;
  s->scan = 0;
  s->phase = 0;
  return total;
}

/* The n-th (0-based) space-separated field of a line, or NULL. */
static const char *field(const char *line, size_t len, int idx, size_t *flen) {
  size_t i = 0;
  for (int f = 0;; f++) {
    while (i < len && line[i] == ' ') i++;
    if (i >= len) return NULL;
    size_t start = i;
    while (i < len && line[i] != ' ') i++;
    if (f == idx) {
      *flen = i - start;
      return line + start;
    }
  }
}

/* RESP (--protocol resp). A command is SET, or SET and WAIT sent together; its reply is the pair of replies. Only
 * the reply types these two commands can give are framed: simple string, error, integer (and bulk string, to stay
 * in step). RESP_BAD: a reply that cannot be framed, so the connection's stream is lost. */
#define RESP_BAD SIZE_MAX

static size_t resp_one(const char *p, size_t n) {
  if (!n) return 0;
  const char *nl = memchr(p, '\n', n);
  if (!nl) return 0;
  size_t line = (size_t)(nl - p) + 1;
  if (line < 3 || nl[-1] != '\r') return RESP_BAD;
  if (p[0] == '+' || p[0] == '-' || p[0] == ':') return line;
  if (p[0] != '$') return RESP_BAD;
  char *end;
  long long len = strtoll(p + 1, &end, 10);
  if (end != nl - 1 || len < -1 || len > 512 * 1024 * 1024) return RESP_BAD;
  if (len == -1) return line;
  size_t total = line + (size_t)len + 2;
  return total <= n ? total : 0;
}

/* Length of the complete reply pair at p[0..n), 0 if more bytes are needed, or RESP_BAD. The first reply's length
 * goes into s->line_len. */
static size_t resp_reply_len(const char *p, size_t n, struct pstate *s) {
  size_t first = resp_one(p, n);
  if (first == 0 || first == RESP_BAD) return first;
  s->line_len = first;
  if (!opt.wait_replicas) return first;
  size_t second = resp_one(p + first, n - first);
  if (second == 0 || second == RESP_BAD) return second;
  return first + second;
}

/* Checks a reply pair: SET's "+OK", and WAIT's integer. Returns true for a short ack (fewer replicas than asked). */
static bool check_resp(const char *p, size_t len, size_t first) {
  if (first != 5 || memcmp(p, "+OK\r\n", 5) != 0) note_invalid("SET not answered +OK", p, first - 2);
  if (!opt.wait_replicas) return false;
  const char *w = p + first;
  size_t wl = len - first;
  char *end;
  long long acks = wl > 3 && w[0] == ':' ? strtoll(w + 1, &end, 10) : -1;
  if (acks < 0 || end != w + wl - 2) {
    note_invalid("WAIT not answered with a count", w, wl - 2);
    return false;
  }
  return acks < (long long)opt.wait_replicas;
}

/* ------------------------------------------------------------------------------------------------ */
/* Command generation                                                                               */
/* ------------------------------------------------------------------------------------------------ */

static uint64_t g_time_base_ns; /* IAMAT times are g_time_base_ns + counter, printed as s.ns */
static uint64_t g_counter;      /* global, so every client's times strictly increase */
static uint64_t g_cold_seq;
static size_t g_cmd_max;        /* bound on one command's length */
static char g_whatsat_line[1024];
static size_t g_whatsat_len;
static char g_wait_cmd[128]; /* resp: the WAIT sent after each SET */
static size_t g_wait_len;

static inline char *put_str(char *d, const char *s) {
  while (*s) *d++ = *s++;
  return d;
}

static inline char *put_u64(char *d, uint64_t v) {
  char tmp[24];
  int i = 0;
  do {
    tmp[i++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  while (i) *d++ = tmp[--i];
  return d;
}

static inline char *put_time(char *d, uint64_t ns) {
  d = put_u64(d, ns / NS_PER_S);
  *d++ = '.';
  uint64_t frac = ns % NS_PER_S;
  for (int i = 8; i >= 0; i--) {
    d[i] = (char)('0' + frac % 10);
    frac /= 10;
  }
  return d + 9;
}

/* " <id> <loc> <time>": what an AT reply to an IAMAT ends with. */
static size_t iamat_tail(char *buf, const char *prefix, uint64_t a, bool two, uint64_t b, uint64_t time_ns) {
  char *d = buf;
  *d++ = ' ';
  d = put_str(d, prefix);
  d = put_u64(d, a);
  if (two) {
    *d++ = '-';
    d = put_u64(d, b);
  }
  *d++ = ' ';
  d = put_str(d, opt.location);
  *d++ = ' ';
  d = put_time(d, time_ns);
  return (size_t)(d - buf);
}

/* What one in-flight command remembers, to time and check its reply. */
struct slot {
  uint64_t t_send; /* 0 until the write that finished it */
  uint64_t ctr;    /* IAMAT: time counter; fill: client index */
  uint32_t k;      /* IAMAT: client number within the connection */
  uint32_t wend;   /* end offset of the command in the connection's write buffer */
};

/* Writes one command into d; returns its length. */
static size_t gen_command(char *d, unsigned conn_idx, uint32_t *next_k, struct slot *s) {
  char *start = d;
  if (opt.protocol == P_RESP) {
    /* SET <prefix><conn>-<k> "<location> <time>" padded with 'v' to --value-bytes, then the WAIT. */
    s->ctr = g_counter++;
    s->k = *next_k;
    if (++*next_k >= opt.clients_per_conn) *next_k = 0;
    char key[160], value_head[160];
    char *k = put_str(key, opt.id_prefix);
    k = put_u64(k, conn_idx);
    *k++ = '-';
    k = put_u64(k, s->k);
    char *v = put_str(value_head, opt.location);
    *v++ = ' ';
    v = put_time(v, g_time_base_ns + s->ctr);
    size_t head = (size_t)(v - value_head);
    if (head > opt.value_bytes) head = opt.value_bytes;
    d = put_str(d, "*3\r\n$3\r\nSET\r\n$");
    d = put_u64(d, (uint64_t)(k - key));
    d = put_str(d, "\r\n");
    memcpy(d, key, (size_t)(k - key));
    d += k - key;
    d = put_str(d, "\r\n$");
    d = put_u64(d, opt.value_bytes);
    d = put_str(d, "\r\n");
    memcpy(d, value_head, head);
    memset(d + head, 'v', opt.value_bytes - head);
    d += opt.value_bytes;
    d = put_str(d, "\r\n");
    memcpy(d, g_wait_cmd, g_wait_len);
    d += g_wait_len;
  } else if (opt.mode == M_FILL) {
    s->ctr = g_counter++;
    d = put_str(d, "IAMAT");
    d += iamat_tail(d, opt.id_prefix, s->ctr, false, 0, g_time_base_ns + s->ctr);
    *d++ = '\n';
  } else if (opt.command == C_IAMAT) {
    s->ctr = g_counter++;
    s->k = *next_k;
    if (++*next_k >= opt.clients_per_conn) *next_k = 0;
    d = put_str(d, "IAMAT");
    d += iamat_tail(d, opt.id_prefix, conn_idx, true, s->k, g_time_base_ns + s->ctr);
    *d++ = '\n';
  } else if (opt.whatsat_cold) {
    /* 1.000 .. 50.000 km: 49001 values, visited in a scrambled order (stride coprime to 49001). */
    uint64_t v = 1000 + (g_cold_seq++ * 7919u) % 49001u;
    d = put_str(d, "WHATSAT ");
    d = put_str(d, opt.whatsat_id);
    *d++ = ' ';
    d = put_u64(d, v / 1000);
    *d++ = '.';
    *d++ = (char)('0' + v / 100 % 10);
    *d++ = (char)('0' + v / 10 % 10);
    *d++ = (char)('0' + v % 10);
    *d++ = ' ';
    d = put_str(d, opt.bound);
    *d++ = '\n';
  } else {
    memcpy(d, g_whatsat_line, g_whatsat_len);
    d += g_whatsat_len;
  }
  return (size_t)(d - start);
}

/* Checks a complete reply against the command it answers. */
static void check_reply(const char *p, size_t len, size_t line_len, unsigned conn_idx, const struct slot *s) {
  if (opt.echo) {
    /* A reference echo server: the reply is the IAMAT line itself. */
    char line[512];
    char *d = put_str(line, "IAMAT");
    d += iamat_tail(d, opt.id_prefix, conn_idx, true, s->k, g_time_base_ns + s->ctr);
    if (line_len != len - 1 || line_len != (size_t)(d - line) || memcmp(p, line, line_len) != 0) note_invalid("does not echo the command", p, line_len);
    return;
  }
  if (line_len < 3 || memcmp(p, "AT ", 3) != 0) {
    note_invalid("not an AT reply", p, line_len);
    return;
  }
  if (opt.mode == M_FILL || opt.command == C_IAMAT) {
    char tail[512];
    size_t tl = opt.mode == M_FILL ? iamat_tail(tail, opt.id_prefix, s->ctr, false, 0, g_time_base_ns + s->ctr)
                                   : iamat_tail(tail, opt.id_prefix, conn_idx, true, s->k, g_time_base_ns + s->ctr);
    if (line_len != len - 1 || line_len < tl || memcmp(p + line_len - tl, tail, tl) != 0) note_invalid("does not echo the IAMAT", p, line_len);
    return;
  }
  size_t fl;
  const char *id = field(p, line_len, 3, &fl);
  if (!id || fl != strlen(opt.whatsat_id) || memcmp(id, opt.whatsat_id, fl) != 0) {
    note_invalid("AT line of another client", p, line_len);
  } else if (len < line_len + 4 || p[line_len + 1] != '{') {
    note_invalid("no JSON body", p, len);
  }
}

/* ------------------------------------------------------------------------------------------------ */
/* Pacing and the measurement window                                                                */
/* ------------------------------------------------------------------------------------------------ */

static uint64_t g_pace_start;  /* monotonic ns the pacing clock starts at */
static uint64_t g_issued;      /* commands (or exchanges) started */
static uint64_t g_win_start, g_win_end; /* measured window [start, end) of reply completion times */
static uint64_t g_completed_in_window;
static uint64_t g_completed_total;
static bool g_stop_sending;

/* How many more commands may start now. */
static uint64_t budget(uint64_t now) {
  if (g_stop_sending) return 0;
  uint64_t b = UINT64_MAX;
  if (opt.rate > 0) {
    double allowed = (double)(now - g_pace_start) / 1e9 * opt.rate + 1.0;
    b = allowed > (double)g_issued ? (uint64_t)(allowed - (double)g_issued) : 0;
  }
  if (opt.mode == M_FILL) {
    uint64_t left = opt.clients - g_issued;
    if (left < b) b = left;
  }
  return b;
}

/* Returns whether the reply fell inside the measured window. */
static inline bool record(uint64_t t_send, uint64_t now) {
  g_completed_total++;
  if (now >= g_win_start && now < g_win_end) {
    g_completed_in_window++;
    hist_add(&g_hist, now - t_send);
    return true;
  }
  return false;
}

static uint64_t g_short_acks; /* resp: WAIT replies in the window that counted fewer replicas than asked */

static int make_pace_timer(void) {
  if (opt.rate <= 0) return -1;
  double period = 1e9 / opt.rate;
  if (period < 500000) period = 500000; /* at most 2000 wake-ups a second */
  if (period > 10e6) period = 10e6;
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) {
    perror("loadgen: timerfd_create");
    exit(1);
  }
  struct itimerspec its;
  its.it_interval.tv_sec = (time_t)(period / 1e9);
  its.it_interval.tv_nsec = (long)((uint64_t)period % NS_PER_S);
  its.it_value = its.it_interval;
  timerfd_settime(tfd, 0, &its, NULL);
  return tfd;
}

static void progress(uint64_t now, uint64_t start, const char *what) {
  static uint64_t last_t, last_n;
  if (opt.quiet) return;
  if (!last_t) last_t = start;
  double dt = (double)(now - last_t) / 1e9;
  fprintf(stderr, "loadgen: %.1fs %s=%llu (%.0f/s) errors=%llu invalid=%llu\n", (double)(now - start) / 1e9, what,
          (unsigned long long)g_completed_total, dt > 0 ? (double)(g_completed_total - last_n) / dt : 0.0,
          (unsigned long long)g_errors, (unsigned long long)g_invalid);
  last_t = now;
  last_n = g_completed_total;
}

static int epoll_timeout_ms(uint64_t now, uint64_t next) {
  if (next <= now) return 0;
  uint64_t ms = (next - now + 999999) / 1000000;
  return ms > 1000 ? 1000 : (int)ms;
}

/* ------------------------------------------------------------------------------------------------ */
/* rr / pipelined / fill: persistent connections with up to `depth` commands in flight each         */
/* ------------------------------------------------------------------------------------------------ */

enum cstate { CS_CONNECTING, CS_OPEN, CS_DRAINING, CS_CLOSED };

struct conn {
  int fd;
  unsigned idx;
  int port;
  enum cstate state;
  bool out_armed, shut;
  char *rbuf;
  size_t rcap, rlen;
  struct pstate ps;
  char *wbuf;
  size_t wlen, woff;
  struct slot *ring;
  unsigned head, count, stamped;
  uint32_t next_k;
};

static struct conn *g_conns;
static unsigned g_nconns, g_open, g_rr_next;
static int g_ep;
static uint64_t g_lost;          /* commands in flight on connections that failed */
static unsigned g_conn_failures; /* connections that failed */

static void set_events(struct conn *c, bool out) {
  if (c->out_armed == out) return;
  struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.u64 = c->idx};
  epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
  c->out_armed = out;
}

static void conn_close(struct conn *c) {
  if (c->state == CS_CLOSED) return;
  close(c->fd); /* also leaves the epoll set */
  c->fd = -1;
  if (c->state == CS_OPEN || c->state == CS_CONNECTING) g_open--;
  c->state = CS_CLOSED;
}

static void conn_fail(struct conn *c, const char *what, int err) {
  if (c->state == CS_DRAINING) {
    conn_close(c);
    return;
  }
  g_conn_failures++;
  g_lost += c->count;
  note_error("connection %u (port %d): %s%s%s; %u commands in flight lost", c->idx, c->port, what, err ? ": " : "",
             err ? strerror(err) : "", c->count);
  conn_close(c);
}

/* Writes what is pending; stamps each command finished by this write with the time just before it. */
static void conn_flush(struct conn *c) {
  while (c->woff < c->wlen) {
    uint64_t t = mono_ns();
    ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      conn_fail(c, "write", errno);
      return;
    }
    c->woff += (size_t)n;
    while (c->stamped < c->count) {
      struct slot *s = &c->ring[(c->head + c->stamped) % opt.depth];
      if (s->wend > c->woff) break;
      s->t_send = t;
      c->stamped++;
    }
  }
  if (c->woff == c->wlen) {
    c->woff = c->wlen = 0;
    set_events(c, false);
    if (c->state == CS_DRAINING && !c->shut) {
      shutdown(c->fd, SHUT_WR);
      c->shut = true;
    }
  } else {
    set_events(c, true);
  }
}

/* Fills up to `max` free slots of a connection with new commands, sent with one write. */
static uint64_t conn_refill(struct conn *c, uint64_t max) {
  if (c->state != CS_OPEN || c->wlen != c->woff) return 0;
  uint64_t n = opt.depth - c->count;
  if (n > max) n = max;
  if (!n) return 0;
  char *d = c->wbuf;
  for (uint64_t i = 0; i < n; i++) {
    struct slot *s = &c->ring[(c->head + c->count) % opt.depth];
    s->t_send = 0;
    d += gen_command(d, c->idx, &c->next_k, s);
    s->wend = (uint32_t)(d - c->wbuf);
    c->count++;
  }
  c->wlen = (size_t)(d - c->wbuf);
  c->woff = 0;
  g_issued += n;
  conn_flush(c);
  return n;
}

static void conn_readable(struct conn *c) {
  if (c->rcap - c->rlen < 16384) {
    size_t ncap = c->rcap * 2;
    char *nb = realloc(c->rbuf, ncap);
    if (!nb) {
      conn_fail(c, "out of memory for the read buffer", 0);
      return;
    }
    c->rbuf = nb;
    c->rcap = ncap;
  }
  ssize_t n = read(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    conn_fail(c, "read", errno);
    return;
  }
  uint64_t now = mono_ns();
  if (n == 0) {
    if (c->state == CS_DRAINING) conn_close(c);
    else conn_fail(c, "server closed the connection", 0);
    return;
  }
  c->rlen += (size_t)n;
  size_t pos = 0;
  bool counting = c->state == CS_OPEN;
  bool resp = opt.protocol == P_RESP;
  while (c->count > 0) {
    size_t len = resp ? resp_reply_len(c->rbuf + pos, c->rlen - pos, &c->ps)
                      : reply_len(c->rbuf + pos, c->rlen - pos, &c->ps, opt.mode != M_FILL && opt.command == C_WHATSAT);
    if (!len) break;
    if (len == RESP_BAD) {
      note_invalid("not a RESP reply to SET or WAIT", c->rbuf + pos, c->rlen - pos);
      conn_fail(c, "lost the RESP framing", 0);
      return;
    }
    struct slot *s = &c->ring[c->head];
    if (c->stamped == 0) { /* cannot happen: a reply before its command was written */
      s->t_send = now;
      c->stamped = 1;
    }
    if (counting && resp) {
      bool short_ack = check_resp(c->rbuf + pos, len, c->ps.line_len);
      if (record(s->t_send, now) && short_ack) g_short_acks++;
    } else if (counting) {
      check_reply(c->rbuf + pos, len, c->ps.line_len, c->idx, s);
      record(s->t_send, now);
    }
    c->head = (c->head + 1) % opt.depth;
    c->count--;
    c->stamped--;
    pos += len;
  }
  if (c->count == 0 && pos < c->rlen) {
    note_invalid("unsolicited bytes", c->rbuf + pos, c->rlen - pos);
    pos = c->rlen;
    c->ps = (struct pstate){0};
  }
  if (pos) {
    memmove(c->rbuf, c->rbuf + pos, c->rlen - pos);
    c->rlen -= pos;
  }
}

/* Hands out the rate budget to connections with free slots, round-robin. */
static void dispatch(uint64_t now) {
  uint64_t avail = budget(now);
  if (!avail || !g_open) return;
  uint64_t share = avail / g_open;
  if (share < 1) share = 1;
  unsigned i;
  for (i = 0; i < g_nconns && avail; i++) {
    struct conn *c = &g_conns[(g_rr_next + i) % g_nconns];
    avail -= conn_refill(c, avail < share ? avail : share);
  }
  g_rr_next = (g_rr_next + i) % g_nconns;
}

static int run_conns(void) {
  bool fill = opt.mode == M_FILL;
  if (fill) opt.connections = opt.connections ? opt.connections : 1;
  g_nconns = opt.connections;
  g_conns = calloc(g_nconns, sizeof *g_conns);
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (!g_conns || g_ep < 0) {
    perror("loadgen");
    return 1;
  }
  size_t wcap = (size_t)opt.depth * g_cmd_max;
  uint64_t t_begin = mono_ns();
  double cap_s = fill ? (opt.max_time_s > 0 ? opt.max_time_s : 600) : opt.warmup_s + opt.duration_s + 10;
  uint64_t hard_deadline = t_begin + (uint64_t)(cap_s * 1e9);

  /* Connect everything first; the clock starts when every connection is up (or failed). */
  for (unsigned i = 0; i < g_nconns; i++) {
    struct conn *c = &g_conns[i];
    c->idx = i;
    c->port = opt.ports[i % (unsigned)opt.nports];
    c->rcap = 65536;
    c->rbuf = malloc(c->rcap);
    c->wbuf = malloc(wcap);
    c->ring = calloc(opt.depth, sizeof *c->ring);
    if (!c->rbuf || !c->wbuf || !c->ring) {
      perror("loadgen: malloc");
      return 1;
    }
    int err;
    c->fd = socket_connect(c->port, &err);
    if (c->fd < 0) {
      c->state = CS_CLOSED;
      g_conn_failures++;
      note_error("connection %u: connect 127.0.0.1:%d: %s", i, c->port, strerror(err));
      continue;
    }
    c->state = err ? CS_CONNECTING : CS_OPEN;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = i};
    c->out_armed = true;
    epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev);
    g_open++;
    if (c->state == CS_OPEN) set_events(c, false);
  }
  struct epoll_event evs[1024];
  uint64_t connect_deadline = mono_ns() + 5 * NS_PER_S;
  for (;;) {
    unsigned connecting = 0;
    for (unsigned i = 0; i < g_nconns; i++) connecting += g_conns[i].state == CS_CONNECTING;
    if (!connecting) break;
    uint64_t now = mono_ns();
    if (now >= connect_deadline || g_interrupted) {
      for (unsigned i = 0; i < g_nconns; i++)
        if (g_conns[i].state == CS_CONNECTING) conn_fail(&g_conns[i], "connect", ETIMEDOUT);
      break;
    }
    int n = epoll_wait(g_ep, evs, 1024, epoll_timeout_ms(now, connect_deadline));
    for (int j = 0; j < n; j++) {
      struct conn *c = &g_conns[evs[j].data.u64];
      if (c->state != CS_CONNECTING) continue;
      int e = socket_error(c->fd);
      if (e) {
        conn_fail(c, "connect", e);
      } else {
        c->state = CS_OPEN;
        set_events(c, false);
      }
    }
  }
  if (!g_open) {
    fputs("loadgen: no connection could be opened\n", stderr);
  }

  int tfd = make_pace_timer();
  if (tfd >= 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &ev);
  }
  uint64_t t_run = mono_ns();
  g_pace_start = t_run;
  if (fill) {
    g_win_start = t_run;
    g_win_end = UINT64_MAX;
  } else {
    g_win_start = t_run + (uint64_t)(opt.warmup_s * 1e9);
    g_win_end = g_win_start + (uint64_t)(opt.duration_s * 1e9);
  }
  struct cpu_mark cpu_a = cpu_now(), cpu_b = cpu_a;
  struct server_cpu_mark scpu_a = server_cpu_now(), scpu_b;
  bool measuring = fill, capped = false;
  uint64_t last_completion = t_run, next_progress = t_run + NS_PER_S;
  if (opt.rate > 0) dispatch(t_run);
  else
    for (unsigned i = 0; i < g_nconns; i++) conn_refill(&g_conns[i], budget(t_run));

  while (g_open) {
    uint64_t now = mono_ns();
    uint64_t next = next_progress;
    if (!measuring && g_win_start < next) next = g_win_start;
    if (!fill && g_win_end < next) next = g_win_end;
    if (hard_deadline < next) next = hard_deadline;
    int n = epoll_wait(g_ep, evs, 1024, epoll_timeout_ms(now, next));
    if (n < 0 && errno != EINTR) {
      perror("loadgen: epoll_wait");
      break;
    }
    uint64_t before = g_completed_total;
    for (int j = 0; j < n; j++) {
      if (evs[j].data.u64 == UINT64_MAX) {
        uint64_t ticks;
        if (read(tfd, &ticks, sizeof ticks) < 0) { /* nothing to do */
        }
        continue;
      }
      struct conn *c = &g_conns[evs[j].data.u64];
      if (c->state == CS_CLOSED) continue;
      uint32_t e = evs[j].events;
      if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) conn_readable(c);
      if (c->state == CS_CLOSED) continue;
      if ((e & EPOLLOUT) && c->woff < c->wlen) conn_flush(c);
      if (opt.rate <= 0 && c->state == CS_OPEN) conn_refill(c, budget(now));
    }
    now = mono_ns();
    if (g_completed_total != before) last_completion = now;
    if (opt.rate > 0) dispatch(now);
    if (!measuring && now >= g_win_start) {
      measuring = true;
      cpu_a = cpu_now();
      scpu_a = server_cpu_now();
    }
    if (now >= next_progress) {
      progress(now, t_run, fill ? "replies" : "completed");
      next_progress += NS_PER_S;
    }
    if (fill && g_completed_total >= opt.clients) break;
    if (!fill && now >= g_win_end) break;
    if (now >= hard_deadline) {
      capped = true;
      note_error("hit the hard time cap of %.0f s", cap_s);
      break;
    }
    if (g_interrupted) break;
  }
  uint64_t t_stop = mono_ns();
  cpu_b = cpu_now();
  scpu_b = server_cpu_now();
  if (!measuring) {
    cpu_a = cpu_b;
    scpu_a = scpu_b;
  }
  bool ended_early = !g_open && !g_interrupted; /* every connection failed before the end */
  if (ended_early) note_error("every connection failed: the run ended early");
  if (fill) g_win_end = last_completion;

  /* Drain: finish partial writes, half-close, read until EOF (not counted), at most 2 s. */
  g_stop_sending = true;
  for (unsigned i = 0; i < g_nconns; i++) {
    struct conn *c = &g_conns[i];
    if (c->state != CS_OPEN) continue;
    c->state = CS_DRAINING;
    g_open--;
    if (c->woff == c->wlen) {
      shutdown(c->fd, SHUT_WR);
      c->shut = true;
    }
  }
  uint64_t drain_deadline = mono_ns() + 2 * NS_PER_S;
  for (;;) {
    unsigned left = 0;
    for (unsigned i = 0; i < g_nconns; i++) left += g_conns[i].state == CS_DRAINING;
    uint64_t now = mono_ns();
    if (!left || now >= drain_deadline || g_interrupted) break;
    int n = epoll_wait(g_ep, evs, 1024, epoll_timeout_ms(now, drain_deadline));
    for (int j = 0; j < n; j++) {
      if (evs[j].data.u64 == UINT64_MAX) {
        uint64_t ticks;
        if (read(tfd, &ticks, sizeof ticks) < 0) { /* nothing to do */
        }
        continue;
      }
      struct conn *c = &g_conns[evs[j].data.u64];
      if (c->state != CS_DRAINING) continue;
      if (evs[j].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) conn_readable(c);
      if (c->state == CS_DRAINING && (evs[j].events & EPOLLOUT) && c->woff < c->wlen) conn_flush(c);
    }
  }
  for (unsigned i = 0; i < g_nconns; i++) conn_close(&g_conns[i]);

  double window_s;
  if (fill) window_s = (double)(g_win_end - t_run) / 1e9;
  else {
    uint64_t end = t_stop < g_win_end ? t_stop : g_win_end;
    window_s = end > g_win_start ? (double)(end - g_win_start) / 1e9 : 0;
  }
  FILE *f = stdout;
  fprintf(f, "{\"mode\":");
  json_str(f, opt.mode_name);
  if (opt.protocol == P_RESP) {
    fprintf(f, ",\"protocol\":\"resp\",\"command\":\"%s\",\"wait_replicas\":%u,\"wait_timeout_ms\":%u,\"value_bytes\":%u",
            opt.wait_replicas ? "set+wait" : "set", opt.wait_replicas, opt.wait_timeout_ms, opt.value_bytes);
  } else if (!fill) {
    fprintf(f, ",\"command\":\"%s\"", opt.command == C_IAMAT ? "iamat" : "whatsat");
    if (opt.command == C_WHATSAT) {
      fputs(",\"whatsat\":{\"id\":", f);
      json_str(f, opt.whatsat_id);
      fputs(",\"radius\":", f);
      json_str(f, opt.whatsat_cold ? "cold" : opt.radius);
      fputs(",\"bound\":", f);
      json_str(f, opt.bound);
      fprintf(f, ",\"cold\":%s}", opt.whatsat_cold ? "true" : "false");
    }
  } else {
    fprintf(f, ",\"clients\":%llu", (unsigned long long)opt.clients);
  }
  fputc(',', f);
  json_ports(f);
  fprintf(f, ",\"connections\":%u,\"depth\":%u,\"rate_target_per_s\":%.0f", g_nconns, opt.depth, opt.rate);
  if (!fill) fprintf(f, ",\"warmup_s\":%.3f", opt.warmup_s);
  fprintf(f, ",\"duration_s\":%.3f,\"commands\":%llu,\"throughput_per_s\":%.1f,", window_s,
          (unsigned long long)g_completed_in_window, window_s > 0 ? (double)g_completed_in_window / window_s : 0.0);
  json_latency(f, &g_hist);
  fprintf(f, ",\"replies_total\":%llu,\"errors\":%llu,\"invalid_replies\":%llu,\"connection_failures\":%u,\"lost_in_flight\":%llu,",
          (unsigned long long)g_completed_total, (unsigned long long)g_errors, (unsigned long long)g_invalid, g_conn_failures,
          (unsigned long long)g_lost);
  if (opt.protocol == P_RESP) fprintf(f, "\"short_acks\":%llu,", (unsigned long long)g_short_acks);
  if (opt.echo) fputs("\"echo\":true,", f);
  json_cpu(f, cpu_a, cpu_b);
  if (opt.nserver_pids) json_server_cpu(f, scpu_a, scpu_b, (double)(cpu_b.mono - cpu_a.mono) / 1e9, g_completed_in_window);
  fprintf(f, ",\"interrupted\":%s,\"hit_time_cap\":%s,\"ended_early\":%s}\n", g_interrupted ? "true" : "false",
          capped ? "true" : "false", ended_early ? "true" : "false");
  fflush(f);
  if (fill) return g_completed_in_window == opt.clients && !capped ? 0 : 1;
  return g_completed_in_window > 0 && !capped && !ended_early && !g_interrupted ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* halfclose: one command per connection                                                            */
/* ------------------------------------------------------------------------------------------------ */

enum xstate { XS_IDLE, XS_CONNECTING, XS_WRITING, XS_READING };

struct exch {
  int fd;
  unsigned idx;
  int port;
  enum xstate state;
  uint64_t t0, retry_at;
  char *buf;
  size_t cap, len;
  char cmd[1024];
  size_t cmdlen, woff;
  struct slot s;
  uint32_t next_k;
};

static struct exch *g_ex;
static unsigned g_port_rr, g_ex_idle;

static void ex_fail(struct exch *x, const char *what, int err, uint64_t now) {
  note_error("exchange %u (port %d): %s%s%s", x->idx, x->port, what, err ? ": " : "", err ? strerror(err) : "");
  if (x->fd >= 0) close(x->fd);
  x->fd = -1;
  x->state = XS_IDLE;
  g_ex_idle++;
  x->retry_at = now + 10 * 1000000ull; /* back off 10 ms so a refusing server is not hammered */
}

static void ex_write(struct exch *x, uint64_t now) {
  while (x->woff < x->cmdlen) {
    ssize_t n = write(x->fd, x->cmd + x->woff, x->cmdlen - x->woff);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        x->state = XS_WRITING;
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = x->idx};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, x->fd, &ev);
        return;
      }
      ex_fail(x, "write", errno, now);
      return;
    }
    x->woff += (size_t)n;
  }
  shutdown(x->fd, SHUT_WR);
  x->state = XS_READING;
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = x->idx};
  epoll_ctl(g_ep, EPOLL_CTL_MOD, x->fd, &ev);
}

static void ex_start(struct exch *x) {
  g_ex_idle--;
  x->port = opt.ports[g_port_rr++ % (unsigned)opt.nports];
  x->len = 0;
  x->woff = 0;
  x->cmdlen = gen_command(x->cmd, x->idx, &x->next_k, &x->s);
  g_issued++;
  x->t0 = mono_ns();
  int err;
  x->fd = socket_connect(x->port, &err);
  if (x->fd < 0) {
    ex_fail(x, "connect", err, x->t0);
    return;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = x->idx};
  epoll_ctl(g_ep, EPOLL_CTL_ADD, x->fd, &ev);
  x->state = XS_CONNECTING;
  if (!err) ex_write(x, x->t0);
}

static void ex_done(struct exch *x, uint64_t now) {
  close(x->fd);
  x->fd = -1;
  x->state = XS_IDLE;
  g_ex_idle++;
  x->retry_at = 0;
  struct pstate ps = {0};
  size_t len = reply_len(x->buf, x->len, &ps, opt.command == C_WHATSAT);
  if (!len) {
    note_invalid("incomplete reply before EOF", x->buf, x->len);
  } else {
    check_reply(x->buf, len, ps.line_len, x->idx, &x->s);
    if (len != x->len) note_invalid("more than one reply", x->buf, x->len);
  }
  if (!len) g_completed_total++; /* an exchange happened, but it is not timed */
  else record(x->t0, now);
}

static void ex_readable(struct exch *x, uint64_t now) {
  if (x->cap - x->len < 16384) {
    size_t ncap = x->cap ? x->cap * 2 : 65536;
    char *nb = realloc(x->buf, ncap);
    if (!nb) {
      ex_fail(x, "out of memory", 0, now);
      return;
    }
    x->buf = nb;
    x->cap = ncap;
  }
  ssize_t n = read(x->fd, x->buf + x->len, x->cap - x->len);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return;
    ex_fail(x, "read", errno, now);
    return;
  }
  if (n == 0) {
    ex_done(x, mono_ns());
    return;
  }
  x->len += (size_t)n;
}

static int run_halfclose(void) {
  unsigned nx = opt.concurrency;
  g_ex = calloc(nx, sizeof *g_ex);
  g_ep = epoll_create1(EPOLL_CLOEXEC);
  if (!g_ex || g_ep < 0) {
    perror("loadgen");
    return 1;
  }
  int tfd = make_pace_timer();
  if (tfd >= 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, tfd, &ev);
  }
  uint64_t t_run = mono_ns();
  uint64_t hard_deadline = t_run + (uint64_t)((opt.warmup_s + opt.duration_s + 10) * 1e9);
  g_pace_start = t_run;
  g_win_start = t_run + (uint64_t)(opt.warmup_s * 1e9);
  g_win_end = g_win_start + (uint64_t)(opt.duration_s * 1e9);
  struct cpu_mark cpu_a = cpu_now(), cpu_b;
  struct server_cpu_mark scpu_a = server_cpu_now(), scpu_b;
  bool measuring = false, capped = false;
  uint64_t next_progress = t_run + NS_PER_S;
  for (unsigned i = 0; i < nx; i++) {
    g_ex[i].idx = i;
    g_ex[i].fd = -1;
    g_ex[i].state = XS_IDLE;
  }
  g_ex_idle = nx;
  struct epoll_event evs[1024];
  for (;;) {
    uint64_t now = mono_ns();
    /* Start exchanges in idle slots, within the rate budget. */
    uint64_t next_retry = UINT64_MAX;
    if (g_ex_idle && now < g_win_end && !g_interrupted) {
      uint64_t b = budget(now);
      for (unsigned i = 0; i < nx; i++) {
        struct exch *x = &g_ex[(g_rr_next + i) % nx];
        if (x->state != XS_IDLE) continue;
        if (x->retry_at > now || !b) {
          if (x->retry_at > now && x->retry_at < next_retry) next_retry = x->retry_at;
          continue;
        }
        ex_start(x);
        b--;
      }
      g_rr_next = (g_rr_next + 1) % nx;
    }
    now = mono_ns();
    uint64_t next = next_progress;
    if (!measuring && g_win_start < next) next = g_win_start;
    if (g_win_end < next) next = g_win_end;
    if (hard_deadline < next) next = hard_deadline;
    if (next_retry < next) next = next_retry;
    int n = epoll_wait(g_ep, evs, 1024, epoll_timeout_ms(now, next));
    if (n < 0 && errno != EINTR) {
      perror("loadgen: epoll_wait");
      break;
    }
    now = mono_ns();
    for (int j = 0; j < n; j++) {
      if (evs[j].data.u64 == UINT64_MAX) {
        uint64_t ticks;
        if (read(tfd, &ticks, sizeof ticks) < 0) { /* nothing to do */
        }
        continue;
      }
      struct exch *x = &g_ex[evs[j].data.u64];
      uint32_t e = evs[j].events;
      if (x->state == XS_CONNECTING) {
        int err = socket_error(x->fd);
        if (err) ex_fail(x, "connect", err, now);
        else if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) ex_write(x, now);
      } else if (x->state == XS_WRITING) {
        ex_write(x, now);
      } else if (x->state == XS_READING) {
        ex_readable(x, now);
      }
      /* Unpaced: the slot that just finished starts its next exchange at once. */
      if (x->state == XS_IDLE && x->retry_at == 0 && now < g_win_end && !g_interrupted && budget(now)) ex_start(x);
    }
    now = mono_ns();
    if (!measuring && now >= g_win_start) {
      measuring = true;
      cpu_a = cpu_now();
      scpu_a = server_cpu_now();
    }
    if (now >= next_progress) {
      progress(now, t_run, "exchanges");
      next_progress += NS_PER_S;
    }
    if (now >= g_win_end || g_interrupted) break;
    if (now >= hard_deadline) {
      capped = true;
      break;
    }
  }
  cpu_b = cpu_now();
  scpu_b = server_cpu_now();
  if (!measuring) {
    cpu_a = cpu_b;
    scpu_a = scpu_b;
  }
  uint64_t t_stop = cpu_b.mono;
  /* Let exchanges in progress finish (not counted), at most 2 s. */
  g_stop_sending = true;
  uint64_t drain_deadline = mono_ns() + 2 * NS_PER_S;
  for (;;) {
    unsigned busy = 0;
    for (unsigned i = 0; i < nx; i++) busy += g_ex[i].state != XS_IDLE;
    uint64_t now = mono_ns();
    if (!busy || now >= drain_deadline || g_interrupted) break;
    int n = epoll_wait(g_ep, evs, 1024, epoll_timeout_ms(now, drain_deadline));
    now = mono_ns();
    for (int j = 0; j < n; j++) {
      if (evs[j].data.u64 == UINT64_MAX) {
        uint64_t ticks;
        if (read(tfd, &ticks, sizeof ticks) < 0) { /* nothing to do */
        }
        continue;
      }
      struct exch *x = &g_ex[evs[j].data.u64];
      if (x->state == XS_CONNECTING) {
        int err = socket_error(x->fd);
        if (err) ex_fail(x, "connect", err, now);
        else ex_write(x, now);
      } else if (x->state == XS_WRITING) {
        ex_write(x, now);
      } else if (x->state == XS_READING) {
        ex_readable(x, now);
      }
    }
  }
  for (unsigned i = 0; i < nx; i++)
    if (g_ex[i].fd >= 0) close(g_ex[i].fd);

  uint64_t end = t_stop < g_win_end ? t_stop : g_win_end;
  double window_s = end > g_win_start ? (double)(end - g_win_start) / 1e9 : 0;
  FILE *f = stdout;
  fprintf(f, "{\"mode\":\"halfclose\",\"command\":\"%s\",", opt.command == C_IAMAT ? "iamat" : "whatsat");
  json_ports(f);
  fprintf(f, ",\"connections\":%u,\"concurrency\":%u,\"depth\":1,\"rate_target_per_s\":%.0f,\"warmup_s\":%.3f", nx, nx, opt.rate,
          opt.warmup_s);
  fprintf(f, ",\"duration_s\":%.3f,\"commands\":%llu,\"throughput_per_s\":%.1f,", window_s,
          (unsigned long long)g_completed_in_window, window_s > 0 ? (double)g_completed_in_window / window_s : 0.0);
  json_latency(f, &g_hist);
  fprintf(f, ",\"replies_total\":%llu,\"errors\":%llu,\"invalid_replies\":%llu,", (unsigned long long)g_completed_total,
          (unsigned long long)g_errors, (unsigned long long)g_invalid);
  if (opt.echo) fputs("\"echo\":true,", f);
  json_cpu(f, cpu_a, cpu_b);
  if (opt.nserver_pids) json_server_cpu(f, scpu_a, scpu_b, (double)(cpu_b.mono - cpu_a.mono) / 1e9, g_completed_in_window);
  fprintf(f, ",\"interrupted\":%s,\"hit_time_cap\":%s}\n", g_interrupted ? "true" : "false", capped ? "true" : "false");
  fflush(f);
  return g_completed_in_window > 0 && !capped && !g_interrupted ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* propagation: IAMAT on one server, poll WHATSAT on another until the new record shows             */
/* ------------------------------------------------------------------------------------------------ */

struct rconn {
  int fd, port;
  char *buf;
  size_t cap, len;
  struct pstate ps;
};

static bool rconn_open(struct rconn *r, uint64_t deadline) {
  if (r->fd >= 0) close(r->fd);
  r->len = 0;
  r->ps = (struct pstate){0};
  r->fd = connect_wait(r->port, deadline);
  return r->fd >= 0;
}

/* One read; returns -1 on error/EOF (noted), else 0. */
static int rconn_read(struct rconn *r) {
  if (r->cap - r->len < 16384) {
    size_t ncap = r->cap ? r->cap * 2 : 65536;
    char *nb = realloc(r->buf, ncap);
    if (!nb) return -1;
    r->buf = nb;
    r->cap = ncap;
  }
  ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) return 0;
    note_error("read from port %d: %s", r->port, strerror(errno));
    return -1;
  }
  if (n == 0) {
    note_error("port %d closed the connection", r->port);
    return -1;
  }
  r->len += (size_t)n;
  return 0;
}

static void rconn_consume(struct rconn *r, size_t len) {
  memmove(r->buf, r->buf + len, r->len - len);
  r->len -= len;
}

static int run_propagation(void) {
  struct rconn a = {.fd = -1, .port = opt.from_port}, b = {.fd = -1, .port = opt.to_port};
  uint64_t per_sample = (uint64_t)opt.timeout_ms * 1000000ull;
  double cap_s = opt.max_time_s > 0 ? opt.max_time_s : (double)opt.samples * (double)opt.timeout_ms / 1e3 + 10;
  uint64_t t_run = mono_ns(), hard_deadline = t_run + (uint64_t)(cap_s * 1e9);
  g_win_start = 0;
  g_win_end = UINT64_MAX;
  struct cpu_mark cpu_a = cpu_now();
  const char *prefix = opt.id_prefix ? opt.id_prefix : "prop-";
  uint64_t polls_total = 0, polls_max = 0, stale_at = 0, refused = 0;
  uint64_t last_time_ns = 0, next_progress = t_run + NS_PER_S;
  bool capped = false;
  unsigned done = 0;
  for (unsigned i = 0; i < opt.samples && !g_interrupted; i++) {
    uint64_t now = mono_ns();
    if (now >= hard_deadline) {
      capped = true;
      note_error("hit the hard time cap of %.0f s", cap_s);
      break;
    }
    uint64_t deadline = now + per_sample;
    if (deadline > hard_deadline) deadline = hard_deadline;
    if ((a.fd < 0 && !rconn_open(&a, deadline)) || (b.fd < 0 && !rconn_open(&b, deadline))) {
      /* Counted; wait a little, then the next sample tries again. */
      struct timespec ts = {0, 100 * 1000000L};
      nanosleep(&ts, NULL);
      continue;
    }
    uint64_t tns = real_ns();
    if (tns <= last_time_ns) tns = last_time_ns + 1;
    last_time_ns = tns;
    char iamat[512], whatsat[512], want[64];
    char *d = put_str(iamat, "IAMAT ");
    d = put_str(d, prefix);
    d = put_u64(d, i);
    d = put_str(d, " +1-1 ");
    char *tstart = d;
    d = put_time(d, tns);
    size_t wl = (size_t)(d - tstart);
    want[0] = ' ';
    memcpy(want + 1, tstart, wl);
    wl++;
    *d++ = '\n';
    size_t il = (size_t)(d - iamat);
    d = put_str(whatsat, "WHATSAT ");
    d = put_str(d, prefix);
    d = put_u64(d, i);
    d = put_str(d, " 1 0\n");
    size_t ql = (size_t)(d - whatsat);

    uint64_t t0 = mono_ns(), t_match = 0;
    if (!write_all_wait(a.fd, iamat, il, deadline) || !write_all_wait(b.fd, whatsat, ql, deadline)) {
      close(a.fd);
      close(b.fd);
      a.fd = b.fd = -1;
      continue;
    }
    uint64_t polls = 1;
    bool a_done = false, matched = false, broken = false;
    while (!(a_done && matched)) {
      now = mono_ns();
      if (now >= deadline || g_interrupted) {
        note_error("sample %u: no %s within %ld ms (%llu polls)", i, matched ? "IAMAT reply" : "matching WHATSAT reply",
                   opt.timeout_ms, (unsigned long long)polls);
        broken = true;
        break;
      }
      struct pollfd p[2] = {{.fd = a_done ? -1 : a.fd, .events = POLLIN}, {.fd = matched ? -1 : b.fd, .events = POLLIN}};
      int r = poll(p, 2, epoll_timeout_ms(now, deadline));
      if (r < 0 && errno != EINTR) {
        broken = true;
        break;
      }
      if (r <= 0) continue;
      if (p[0].revents) {
        if (rconn_read(&a) < 0) {
          broken = true;
          break;
        }
        size_t len = reply_len(a.buf, a.len, &a.ps, false);
        if (len) {
          size_t al = a.ps.line_len;
          if (al < 3 || memcmp(a.buf, "AT ", 3) != 0 || al < wl || memcmp(a.buf + al - wl, want, wl) != 0)
            note_invalid("IAMAT reply does not echo the IAMAT", a.buf, al);
          rconn_consume(&a, len);
          a_done = true;
        }
      }
      if (p[1].revents) {
        uint64_t t_read;
        if (rconn_read(&b) < 0) {
          broken = true;
          break;
        }
        t_read = mono_ns();
        size_t len;
        while (!matched && (len = reply_len(b.buf, b.len, &b.ps, true)) > 0) {
          size_t bl = b.ps.line_len;
          bool is_at = bl >= 3 && memcmp(b.buf, "AT ", 3) == 0;
          if (is_at && bl >= wl && memcmp(b.buf + bl - wl, want, wl) == 0) {
            matched = true;
            t_match = t_read;
          } else {
            if (is_at) stale_at++;
            else refused++;
          }
          rconn_consume(&b, len);
          if (!matched) {
            polls++;
            if (!write_all_wait(b.fd, whatsat, ql, deadline)) {
              broken = true;
              break;
            }
          }
        }
        if (broken) break;
      }
    }
    if (broken) {
      /* Replies may still be owed on these connections: start both afresh. */
      close(a.fd);
      close(b.fd);
      a.fd = b.fd = -1;
      if (!matched) continue;
    }
    done++;
    g_completed_total++;
    hist_add(&g_hist, t_match - t0);
    polls_total += polls;
    if (polls > polls_max) polls_max = polls;
    now = mono_ns();
    if (now >= next_progress) {
      progress(now, t_run, "samples");
      next_progress += NS_PER_S;
    }
    if (opt.interval_ms > 0) {
      uint64_t ns = (uint64_t)(opt.interval_ms * 1e6);
      struct timespec ts = {(time_t)(ns / NS_PER_S), (long)(ns % NS_PER_S)};
      while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !g_interrupted) {
      }
    }
  }
  struct cpu_mark cpu_b = cpu_now();
  if (a.fd >= 0) close(a.fd);
  if (b.fd >= 0) close(b.fd);
  free(a.buf);
  free(b.buf);
  FILE *f = stdout;
  fprintf(f, "{\"mode\":\"propagation\",\"from_port\":%d,\"to_port\":%d,\"samples\":%u,\"commands\":%u,", opt.from_port, opt.to_port,
          opt.samples, done);
  json_latency(f, &g_hist);
  fprintf(f, ",\"polls_per_sample_mean\":%.3f,\"polls_per_sample_max\":%llu,\"stale_replies\":%llu,\"unknown_client_replies\":%llu",
          done ? (double)polls_total / done : 0.0, (unsigned long long)polls_max, (unsigned long long)stale_at,
          (unsigned long long)refused);
  fprintf(f, ",\"duration_s\":%.3f,\"errors\":%llu,\"invalid_replies\":%llu,", (double)(cpu_b.mono - t_run) / 1e9,
          (unsigned long long)g_errors, (unsigned long long)g_invalid);
  json_cpu(f, cpu_a, cpu_b);
  fprintf(f, ",\"interrupted\":%s,\"hit_time_cap\":%s}\n", g_interrupted ? "true" : "false", capped ? "true" : "false");
  fflush(f);
  return done == opt.samples ? 0 : 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* startup: poll connect() until the port accepts                                                   */
/* ------------------------------------------------------------------------------------------------ */

static int run_startup(void) {
  int port = opt.ports[0];
  uint64_t t0 = mono_ns(), deadline = t0 + (uint64_t)opt.timeout_ms * 1000000ull;
  uint64_t attempts = 0;
  int last_err = 0;
  struct timespec tick;
  clock_gettime(CLOCK_MONOTONIC, &tick);
  for (;;) {
    attempts++;
    int err;
    int fd = socket_connect(port, &err);
    if (fd >= 0 && err == EINPROGRESS) {
      uint64_t wait_until = mono_ns() + 100 * 1000000ull;
      if (wait_until > deadline) wait_until = deadline;
      int r = wait_fd(fd, POLLOUT, wait_until);
      err = r == 1 ? socket_error(fd) : ETIMEDOUT;
    }
    if (fd >= 0 && err == 0) {
      uint64_t at = real_ns(), t1 = mono_ns();
      close(fd);
      printf("{\"mode\":\"startup\",\"port\":%d,\"connected_at_unix_us\":%llu,\"waited_us\":%llu,\"attempts\":%llu}\n", port,
             (unsigned long long)(at / 1000), (unsigned long long)((t1 - t0) / 1000), (unsigned long long)attempts);
      return 0;
    }
    if (fd >= 0) close(fd);
    if (err != ETIMEDOUT || !last_err) last_err = err; /* a wait cut short by the deadline says little */
    if (mono_ns() >= deadline || g_interrupted) break;
    /* Next attempt 0.2 ms after the previous one started (absolute, so no drift). */
    tick.tv_nsec += 200000;
    if (tick.tv_nsec >= 1000000000L) {
      tick.tv_sec++;
      tick.tv_nsec -= 1000000000L;
    }
    uint64_t tick_ns = (uint64_t)tick.tv_sec * NS_PER_S + (uint64_t)tick.tv_nsec, now = mono_ns();
    if (tick_ns < now) tick = (struct timespec){(time_t)(now / NS_PER_S), (long)(now % NS_PER_S)};
    else
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL) == EINTR && !g_interrupted) {
      }
  }
  uint64_t t1 = mono_ns();
  fprintf(stderr, "loadgen: startup: port %d did not accept within %ld ms (last error: %s)\n", port, opt.timeout_ms,
          strerror(last_err));
  printf("{\"mode\":\"startup\",\"port\":%d,\"connected_at_unix_us\":null,\"waited_us\":%llu,\"attempts\":%llu,\"error\":", port,
         (unsigned long long)((t1 - t0) / 1000), (unsigned long long)attempts);
  json_str(stdout, g_interrupted ? "interrupted" : "timeout");
  printf("}\n");
  return 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* WHATSAT seeding: make sure the client asked about exists on every port                           */
/* ------------------------------------------------------------------------------------------------ */

static bool seed_whatsat_id(void) {
  for (int i = 0; i < opt.nports; i++) {
    bool dup = false;
    for (int j = 0; j < i; j++) dup |= opt.ports[j] == opt.ports[i];
    if (dup) continue;
    uint64_t deadline = mono_ns() + 5 * NS_PER_S;
    int fd = connect_wait(opt.ports[i], deadline);
    if (fd < 0) return false;
    char line[1024];
    char *d = put_str(line, "IAMAT ");
    d = put_str(d, opt.whatsat_id);
    *d++ = ' ';
    d = put_str(d, opt.location);
    *d++ = ' ';
    d = put_time(d, real_ns());
    *d++ = '\n';
    bool ok = write_all_wait(fd, line, (size_t)(d - line), deadline);
    char buf[4096];
    size_t len = 0;
    while (ok && !memchr(buf, '\n', len)) {
      if (len == sizeof buf || wait_fd(fd, POLLIN, deadline) != 1) {
        note_error("seeding %s on port %d: no reply", opt.whatsat_id, opt.ports[i]);
        ok = false;
        break;
      }
      ssize_t n = read(fd, buf + len, sizeof buf - len);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) {
        note_error("seeding %s on port %d: connection closed", opt.whatsat_id, opt.ports[i]);
        ok = false;
        break;
      }
      len += (size_t)n;
    }
    if (ok && (len < 3 || memcmp(buf, "AT ", 3) != 0)) {
      char *nl = memchr(buf, '\n', len);
      note_error("seeding %s on port %d: unexpected reply: %.*s", opt.whatsat_id, opt.ports[i], (int)(nl - buf), buf);
      ok = false;
    }
    close(fd);
    if (!ok) return false;
  }
  return true;
}

/* ------------------------------------------------------------------------------------------------ */
/* main                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  enum {
    O_HOST = 256, O_PORT, O_CONNECTIONS, O_DEPTH, O_DURATION, O_WARMUP, O_COMMAND, O_CPC, O_WID, O_RADIUS, O_BOUND, O_COLD,
    O_NOSEED, O_LOCATION, O_PREFIX, O_RATE, O_CONCURRENCY, O_FROM, O_TO, O_SAMPLES, O_TIMEOUT, O_INTERVAL, O_CLIENTS,
    O_MAXTIME, O_TIMEBASE, O_QUIET, O_HELP, O_PROTOCOL, O_WAIT_REPLICAS, O_WAIT_TIMEOUT, O_VALUE_BYTES, O_ECHO, O_SERVER_PID
  };
  static const struct option longopts[] = {
      {"host", required_argument, 0, O_HOST},
      {"port", required_argument, 0, O_PORT},
      {"connections", required_argument, 0, O_CONNECTIONS},
      {"depth", required_argument, 0, O_DEPTH},
      {"duration", required_argument, 0, O_DURATION},
      {"warmup", required_argument, 0, O_WARMUP},
      {"command", required_argument, 0, O_COMMAND},
      {"clients-per-connection", required_argument, 0, O_CPC},
      {"whatsat-id", required_argument, 0, O_WID},
      {"radius", required_argument, 0, O_RADIUS},
      {"bound", required_argument, 0, O_BOUND},
      {"whatsat-cold", no_argument, 0, O_COLD},
      {"no-seed", no_argument, 0, O_NOSEED},
      {"location", required_argument, 0, O_LOCATION},
      {"id-prefix", required_argument, 0, O_PREFIX},
      {"rate", required_argument, 0, O_RATE},
      {"concurrency", required_argument, 0, O_CONCURRENCY},
      {"from-port", required_argument, 0, O_FROM},
      {"to-port", required_argument, 0, O_TO},
      {"samples", required_argument, 0, O_SAMPLES},
      {"timeout-ms", required_argument, 0, O_TIMEOUT},
      {"interval-ms", required_argument, 0, O_INTERVAL},
      {"clients", required_argument, 0, O_CLIENTS},
      {"max-time", required_argument, 0, O_MAXTIME},
      {"time-base", required_argument, 0, O_TIMEBASE},
      {"quiet", no_argument, 0, O_QUIET},
      {"protocol", required_argument, 0, O_PROTOCOL},
      {"wait-replicas", required_argument, 0, O_WAIT_REPLICAS},
      {"wait-timeout-ms", required_argument, 0, O_WAIT_TIMEOUT},
      {"value-bytes", required_argument, 0, O_VALUE_BYTES},
      {"echo", no_argument, 0, O_ECHO},
      {"server-pid", required_argument, 0, O_SERVER_PID},
      {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0},
  };
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(stdout);
    return 0;
  }
  const char *m = argv[1];
  opt.mode_name = m;
  if (!strcmp(m, "rr")) opt.mode = M_RR;
  else if (!strcmp(m, "pipelined")) opt.mode = M_PIPELINED;
  else if (!strcmp(m, "halfclose")) opt.mode = M_HALFCLOSE;
  else if (!strcmp(m, "propagation")) opt.mode = M_PROPAGATION;
  else if (!strcmp(m, "startup")) opt.mode = M_STARTUP;
  else if (!strcmp(m, "fill")) opt.mode = M_FILL;
  else die_usage("unknown mode '%s' (rr, pipelined, halfclose, propagation, startup, fill)", m);

  bool connections_set = false;
  int c;
  optind = 2;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
    case O_HOST:
      if (strcmp(optarg, "127.0.0.1") != 0) die_usage("refusing host '%s': loadgen only connects to 127.0.0.1", optarg);
      break;
    case O_PORT:
      if (opt.nports == MAX_PORTS) die_usage("at most %d --port", MAX_PORTS);
      opt.ports[opt.nports++] = parse_port("--port", optarg);
      break;
    case O_CONNECTIONS:
      opt.connections = (unsigned)parse_u64("--connections", optarg, 1, 100000);
      connections_set = true;
      break;
    case O_DEPTH: opt.depth = (unsigned)parse_u64("--depth", optarg, 1, 100000); break;
    case O_DURATION: opt.duration_s = parse_double("--duration", optarg, 0.001, 86400); break;
    case O_WARMUP: opt.warmup_s = parse_double("--warmup", optarg, 0, 86400); break;
    case O_COMMAND:
      if (!strcmp(optarg, "iamat")) opt.command = C_IAMAT;
      else if (!strcmp(optarg, "whatsat")) opt.command = C_WHATSAT;
      else die_usage("--command: expected iamat or whatsat, got '%s'", optarg);
      break;
    case O_CPC: opt.clients_per_conn = (unsigned)parse_u64("--clients-per-connection", optarg, 1, 1000000000); break;
    case O_WID: opt.whatsat_id = optarg; break;
    case O_RADIUS: opt.radius = optarg; break;
    case O_BOUND: opt.bound = optarg; break;
    case O_COLD: opt.whatsat_cold = true; break;
    case O_NOSEED: opt.seed = false; break;
    case O_LOCATION: opt.location = optarg; break;
    case O_PREFIX: opt.id_prefix = optarg; break;
    case O_RATE: opt.rate = parse_double("--rate", optarg, 0, 1e8); break;
    case O_CONCURRENCY: opt.concurrency = (unsigned)parse_u64("--concurrency", optarg, 1, 100000); break;
    case O_FROM: opt.from_port = parse_port("--from-port", optarg); break;
    case O_TO: opt.to_port = parse_port("--to-port", optarg); break;
    case O_SAMPLES: opt.samples = (unsigned)parse_u64("--samples", optarg, 1, 100000000); break;
    case O_TIMEOUT: opt.timeout_ms = (long)parse_u64("--timeout-ms", optarg, 1, 86400000); break;
    case O_INTERVAL: opt.interval_ms = parse_double("--interval-ms", optarg, 0, 3600000); break;
    case O_CLIENTS: opt.clients = parse_u64("--clients", optarg, 1, 999999999); break;
    case O_MAXTIME: opt.max_time_s = parse_double("--max-time", optarg, 0.001, 86400 * 7); break;
    case O_TIMEBASE:
      opt.time_base_s = parse_u64("--time-base", optarg, 0, 100000000000ull);
      opt.time_base_set = true;
      break;
    case O_QUIET: opt.quiet = true; break;
    case O_PROTOCOL:
      if (!strcmp(optarg, "line")) opt.protocol = P_LINE;
      else if (!strcmp(optarg, "resp")) opt.protocol = P_RESP;
      else die_usage("--protocol: expected line or resp, got '%s'", optarg);
      break;
    case O_WAIT_REPLICAS: opt.wait_replicas = (unsigned)parse_u64("--wait-replicas", optarg, 0, 1000); break;
    case O_WAIT_TIMEOUT: opt.wait_timeout_ms = (unsigned)parse_u64("--wait-timeout-ms", optarg, 0, 86400000); break;
    case O_VALUE_BYTES: opt.value_bytes = (unsigned)parse_u64("--value-bytes", optarg, 1, 65536); break;
    case O_ECHO: opt.echo = true; break;
    case O_SERVER_PID:
      if (opt.nserver_pids == MAX_PORTS) die_usage("at most %d --server-pid", MAX_PORTS);
      opt.server_pids[opt.nserver_pids++] = (int)parse_u64("--server-pid", optarg, 1, 2147483647);
      break;
    case O_HELP:
    case 'h': usage(stdout); return 0;
    default: die_usage("bad option");
    }
  }
  if (optind < argc) die_usage("unexpected argument '%s'", argv[optind]);

  /* Mode checks and defaults. */
  if (!opt.depth) opt.depth = opt.mode == M_PIPELINED ? 16 : 1;
  if (opt.mode == M_PROPAGATION) {
    if (!opt.from_port || !opt.to_port) die_usage("propagation needs --from-port and --to-port");
    if (opt.timeout_ms < 0) opt.timeout_ms = 5000;
  } else {
    if (!opt.nports) die_usage("%s needs --port", opt.mode_name);
  }
  if (opt.mode == M_STARTUP) {
    if (opt.nports != 1) die_usage("startup takes exactly one --port");
    if (opt.timeout_ms < 0) opt.timeout_ms = 10000;
  }
  if (opt.mode == M_FILL) {
    if (!opt.clients) die_usage("fill needs --clients N");
    if (opt.command != C_IAMAT) die_usage("fill sends IAMAT only");
    if (!connections_set) opt.connections = 1;
    if (!opt.id_prefix) opt.id_prefix = "m";
  }
  if (!opt.id_prefix) opt.id_prefix = "c";
  if (!is_field(opt.id_prefix) || strlen(opt.id_prefix) > 100) die_usage("--id-prefix must be 1-100 non-space characters");
  if (!is_field(opt.location) || strlen(opt.location) > 100) die_usage("--location must be 1-100 non-space characters");
  if (!is_field(opt.whatsat_id) || strlen(opt.whatsat_id) > 200) die_usage("--whatsat-id must be 1-200 non-space characters");
  if (!is_field(opt.radius) || strlen(opt.radius) > 50) die_usage("--radius must be one field");
  if (!is_field(opt.bound) || strlen(opt.bound) > 50) die_usage("--bound must be one field");
  if (opt.mode == M_PROPAGATION || opt.mode == M_STARTUP) {
    if (opt.command != C_IAMAT || opt.rate > 0) die_usage("--command and --rate do not apply to %s", opt.mode_name);
    if (opt.nserver_pids) die_usage("--server-pid does not apply to %s", opt.mode_name);
  }
  if (opt.protocol == P_RESP) {
    if (opt.mode != M_RR && opt.mode != M_PIPELINED) die_usage("--protocol resp applies to rr and pipelined only");
    if (opt.command != C_IAMAT || opt.echo) die_usage("--protocol resp sends SET (and WAIT): no --command or --echo");
  } else if (opt.wait_replicas) {
    die_usage("--wait-replicas needs --protocol resp");
  }
  if (opt.echo && (opt.command != C_IAMAT || opt.mode == M_FILL || opt.mode == M_PROPAGATION || opt.mode == M_STARTUP))
    die_usage("--echo applies to IAMAT in rr, pipelined and halfclose only");

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_IGN;
  sigaction(SIGPIPE, &sa, NULL);
  sa.sa_handler = on_signal; /* no SA_RESTART: blocking calls return EINTR and the run ends with a report */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  /* Enough descriptors for the connections asked for. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  g_time_base_ns = opt.time_base_set ? opt.time_base_s * NS_PER_S : real_ns();
  g_cold_seq = real_ns() / 1000 % 49001; /* a different start each run */
  g_cmd_max = 128 + strlen(opt.id_prefix) + strlen(opt.location) + strlen(opt.whatsat_id) + strlen(opt.radius) + strlen(opt.bound);
  char *d = put_str(g_whatsat_line, "WHATSAT ");
  d = put_str(d, opt.whatsat_id);
  *d++ = ' ';
  d = put_str(d, opt.radius);
  *d++ = ' ';
  d = put_str(d, opt.bound);
  *d++ = '\n';
  g_whatsat_len = (size_t)(d - g_whatsat_line);
  if (opt.protocol == P_RESP) {
    g_cmd_max += opt.value_bytes + 64;
    if (opt.wait_replicas) {
      char n[16], ms[16];
      size_t nl = (size_t)(put_u64(n, opt.wait_replicas) - n), msl = (size_t)(put_u64(ms, opt.wait_timeout_ms) - ms);
      g_wait_len = (size_t)snprintf(g_wait_cmd, sizeof g_wait_cmd, "*3\r\n$4\r\nWAIT\r\n$%zu\r\n%.*s\r\n$%zu\r\n%.*s\r\n", nl, (int)nl,
                                    n, msl, (int)msl, ms);
    }
  }

  switch (opt.mode) {
  case M_STARTUP: return run_startup();
  case M_PROPAGATION: return run_propagation();
  default: break;
  }
  if (opt.command == C_WHATSAT && opt.seed && opt.mode != M_FILL) {
    if (!seed_whatsat_id()) {
      fprintf(stderr, "loadgen: could not seed WHATSAT id '%s' (use --no-seed to skip)\n", opt.whatsat_id);
      printf("{\"mode\":");
      json_str(stdout, opt.mode_name);
      printf(",\"error\":\"seed failed\",\"errors\":%llu}\n", (unsigned long long)g_errors);
      return 1;
    }
  }
  if (opt.mode == M_HALFCLOSE) return run_halfclose();
  return run_conns();
}
