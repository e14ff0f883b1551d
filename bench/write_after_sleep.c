/*
 * The C counterpart of write_after_sleep.ts (docs/PERFORMANCE.md, "Third round"): what one write(2) of 2,600 bytes to
 * a loopback TCP socket costs, back to back and after sleeping a millisecond, with the reader (a child process)
 * sleeping in epoll_wait or spinning on non-blocking reads. 5,000 writes each; prints the mean per write.
 *
 *   gcc -O2 -o /tmp/write_after_sleep bench/write_after_sleep.c && /tmp/write_after_sleep
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* Mean µs per write, with the writer sleeping `sleep_us` before each, and the reader spinning or not. */
static double measure(int sleep_us, int spin) {
  int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = 0};
  socklen_t len = sizeof addr;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1) != 0) return -1;
  getsockname(listener, (struct sockaddr *)&addr, &len);
  pid_t reader = fork();
  if (reader == 0) {
    int s = accept(listener, 0, 0);
    static char buffer[65536];
    if (spin) {
      fcntl(s, F_SETFL, O_NONBLOCK);
      for (;;)
        if (read(s, buffer, sizeof buffer) == 0) _exit(0);
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = s};
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    for (;;) {
      struct epoll_event e;
      epoll_wait(ep, &e, 1, -1);
      if (read(s, buffer, sizeof buffer) <= 0) _exit(0);
    }
  }
  int c = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(c, (struct sockaddr *)&addr, sizeof addr) != 0) return -1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  static char payload[2600];
  memset(payload, 'x', sizeof payload);
  double total = 0;
  const int writes = 5000;
  for (int i = 0; i < writes; i++) {
    if (sleep_us > 0) {
      struct timespec pause = {0, sleep_us * 1000L};
      nanosleep(&pause, 0);
    }
    double start = now_us();
    if (write(c, payload, sizeof payload) != (ssize_t)sizeof payload) return -1;
    total += now_us() - start;
  }
  close(c);
  close(listener);
  kill(reader, SIGKILL);
  waitpid(reader, 0, 0);
  return total / writes;
}

int main(void) {
  printf("2600 bytes per write, 5000 writes, mean µs per write\n");
  printf("back to back, reader in epoll_wait:   %6.1f\n", measure(0, 0));
  printf("after 1 ms asleep, reader in epoll:   %6.1f\n", measure(1000, 0));
  printf("after 1 ms asleep, reader spinning:   %6.1f\n", measure(1000, 1));
  return 0;
}
