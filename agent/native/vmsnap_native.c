/*
 * The few syscalls Node cannot make: passing fds over a unix socket
 * (SCM_RIGHTS, for QMP add-fd, and the snapshot fd a VM pod's launcher receives), reading the peer's credentials
 * (SO_PEERCRED, to learn which QEMU process owns a QMP socket) and
 * probing O_DIRECT with an aligned write (Node cannot allocate aligned
 * buffers, and some filesystems accept O_DIRECT at open but fail writes),
 * and openat2 (to open paths inside a tenant-writable directory without
 * following any symlink or leaving the directory), and pidfds (SO_PEERPIDFD,
 * pidfd_send_signal: a process by identity, never a pid that the
 * kernel may have handed to another process since).
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FDS 16

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value code, message, error;
  napi_create_string_utf8(env, strerrorname_np(err) ? strerrorname_np(err) : "EUNKNOWN", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_throw(env, error);
  return NULL;
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  return napi_get_value_int32(env, v, out) == napi_ok;
}

/* sendFds(socketFd, data: Buffer, fds: number[]): number of bytes sent */
static napi_value send_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 3) {
    napi_throw_type_error(env, NULL, "sendFds(socketFd, data, fds) takes 3 arguments");
    return NULL;
  }
  int32_t sock;
  if (!get_int(env, argv[0], &sock)) {
    napi_throw_type_error(env, NULL, "socketFd must be an integer");
    return NULL;
  }
  void *data;
  size_t len;
  if (napi_get_buffer_info(env, argv[1], &data, &len) != napi_ok || len == 0) {
    napi_throw_type_error(env, NULL, "data must be a non-empty Buffer");
    return NULL;
  }
  uint32_t nfds;
  if (napi_get_array_length(env, argv[2], &nfds) != napi_ok || nfds == 0 || nfds > MAX_FDS) {
    napi_throw_type_error(env, NULL, "fds must be an array of 1..16 file descriptors");
    return NULL;
  }
  int fds[MAX_FDS];
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value el;
    napi_get_element(env, argv[2], i, &el);
    if (!get_int(env, el, &fds[i]) || fds[i] < 0) {
      napi_throw_type_error(env, NULL, "fds must hold non-negative integers");
      return NULL;
    }
  }

  char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  memset(control, 0, sizeof control);
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);

  /* The socket is non-blocking (libuv owns it): wait briefly for room. */
  size_t sent = 0;
  while (sent < len) {
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {.fd = sock, .events = POLLOUT};
        if (poll(&p, 1, 5000) <= 0) return throw_errno(env, "sendmsg (socket not writable)", ETIMEDOUT);
        continue;
      }
      return throw_errno(env, "sendmsg", errno);
    }
    sent += (size_t)n;
    /* The fds travel with the first byte; the rest is plain data. */
    iov.iov_base = (char *)data + sent;
    iov.iov_len = len - sent;
    msg.msg_control = NULL;
    msg.msg_controllen = 0;
  }
  napi_value result;
  napi_create_int64(env, (int64_t)sent, &result);
  return result;
}

/*
 * recvFds(socketFd, maxBytes): { data: Buffer, fds: number[] } from one non-blocking recvmsg
 * (MSG_CMSG_CLOEXEC), or null when nothing is there yet (EAGAIN). The caller must have stopped
 * libuv reading the socket: a plain read() would drop the fds. Fds beyond MAX_FDS, or a
 * truncated control message, are closed and reported as an error.
 */
static napi_value recv_fds(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t sock, max_bytes;
  if (argc != 2 || !get_int(env, argv[0], &sock) || !get_int(env, argv[1], &max_bytes) || max_bytes < 1 || max_bytes > 65536) {
    napi_throw_type_error(env, NULL, "recvFds(socketFd, maxBytes 1..65536)");
    return NULL;
  }
  char buf[65536];
  char control[CMSG_SPACE(sizeof(int) * MAX_FDS)];
  struct iovec iov = {.iov_base = buf, .iov_len = (size_t)max_bytes};
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = recvmsg(sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value null_value;
      napi_get_null(env, &null_value);
      return null_value;
    }
    return throw_errno(env, "recvmsg", errno);
  }
  int fds[MAX_FDS];
  int nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int *p = (int *)CMSG_DATA(c);
    for (int i = 0; i < count; i++) {
      if (nfds < MAX_FDS) fds[nfds++] = p[i];
      else close(p[i]);
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    for (int i = 0; i < nfds; i++) close(fds[i]);
    return throw_errno(env, "recvmsg (too many fds)", EMSGSIZE);
  }
  napi_value result, data, list;
  void *copy;
  napi_create_buffer_copy(env, (size_t)n, buf, &copy, &data);
  napi_create_array_with_length(env, (size_t)nfds, &list);
  for (int i = 0; i < nfds; i++) {
    napi_value v;
    napi_create_int32(env, fds[i], &v);
    napi_set_element(env, list, (uint32_t)i, v);
  }
  napi_create_object(env, &result);
  napi_set_named_property(env, result, "data", data);
  napi_set_named_property(env, result, "fds", list);
  return result;
}

/* Reads exactly n (at most 2) integer arguments; otherwise throws a TypeError saying `usage`. */
static int int_args(napi_env env, napi_callback_info info, size_t n, int32_t *out, const char *usage) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int ok = argc == n;
  for (size_t i = 0; ok && i < n; i++) ok = get_int(env, argv[i], &out[i]);
  if (!ok) napi_throw_type_error(env, NULL, usage);
  return ok;
}

/* peerCredentials(socketFd): { pid, uid, gid } */
static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  int32_t sock;
  if (!int_args(env, info, 1, &sock, "peerCredentials(socketFd) takes an integer")) return NULL;
  struct ucred cred;
  socklen_t clen = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0)
    return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_int32(env, cred.pid, &v);
  napi_set_named_property(env, obj, "pid", v);
  napi_create_uint32(env, cred.uid, &v);
  napi_set_named_property(env, obj, "uid", v);
  napi_create_uint32(env, cred.gid, &v);
  napi_set_named_property(env, obj, "gid", v);
  return obj;
}

/*
 * probeDirectIO(dir): null when an O_DIRECT file can be created in dir and
 * take an aligned 4 KiB write; otherwise a string saying why not.
 */
static napi_value probe_direct_io(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char dir[4096];
  size_t dlen;
  if (argc != 1 || napi_get_value_string_utf8(env, argv[0], dir, sizeof dir - 64, &dlen) != napi_ok) {
    napi_throw_type_error(env, NULL, "probeDirectIO(dir) takes a directory path");
    return NULL;
  }
  char path[4160];
  snprintf(path, sizeof path, "%s/.vmsnap-odirect-probe-XXXXXX", dir);
  char reason[512] = {0};
  int fd = mkostemp(path, O_DIRECT);
  if (fd < 0) {
    snprintf(reason, sizeof reason, "open with O_DIRECT in %s failed: %s", dir, strerror(errno));
  } else {
    unlink(path);
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, 4096) != 0) {
      snprintf(reason, sizeof reason, "cannot allocate an aligned buffer");
    } else {
      memset(buf, 0xA5, 4096);
      ssize_t n = pwrite(fd, buf, 4096, 0);
      if (n != 4096)
        snprintf(reason, sizeof reason, "aligned O_DIRECT write in %s failed: %s", dir,
                 n < 0 ? strerror(errno) : "short write");
      free(buf);
    }
    close(fd);
  }
  napi_value result;
  if (reason[0]) napi_create_string_utf8(env, reason, NAPI_AUTO_LENGTH, &result);
  else napi_get_null(env, &result);
  return result;
}

/* posix_fadvise(fd, offset, length, advice) for fadviseWillNeed and fadviseDontNeed. */
static napi_value fadvise_range(napi_env env, napi_callback_info info, int advice, const char *usage) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  int64_t offset, length;
  if (argc != 3 || !get_int(env, argv[0], &fd) || napi_get_value_int64(env, argv[1], &offset) != napi_ok ||
      napi_get_value_int64(env, argv[2], &length) != napi_ok || offset < 0 || length < 0) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  int err = posix_fadvise(fd, (off_t)offset, (off_t)length, advice);
  if (err != 0) return throw_errno(env, "posix_fadvise", err);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

/*
 * fadviseWillNeed(fd, offset, length): starts reading the range into the page
 * cache (POSIX_FADV_WILLNEED) without copying it anywhere: a lazy restore's
 * prefetch, so the VM's page faults find the pages already in memory.
 */
static napi_value fadvise_willneed(napi_env env, napi_callback_info info) {
  return fadvise_range(env, info, POSIX_FADV_WILLNEED, "fadviseWillNeed(fd, offset, length) takes an fd and two non-negative integers");
}

/*
 * fadviseDontNeed(fd, offset, length): drops the range's clean pages from the
 * page cache (POSIX_FADV_DONTNEED; length 0: to the end of the file).
 */
static napi_value fadvise_dontneed(napi_env env, napi_callback_info info) {
  return fadvise_range(env, info, POSIX_FADV_DONTNEED, "fadviseDontNeed(fd, offset, length) takes an fd and two non-negative integers");
}

/*
 * openBeneath(dir: number | string, relPath: string, flags: number): fd
 * Opens relPath beneath dir (a directory fd, or a directory path the caller trusts) with
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: no component may be a symlink
 * and no step may leave dir. Only reading and O_PATH opens: nothing is created or written.
 */
#define OPEN_BENEATH_FLAGS (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_RDONLY)
static napi_value open_beneath(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char rel[4096], dir[4096];
  size_t rlen, dlen;
  int32_t flags, dirfd = -1;
  napi_valuetype dtype;
  if (argc != 3 || napi_typeof(env, argv[0], &dtype) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], rel, sizeof rel, &rlen) != napi_ok || rlen == 0 ||
      rlen >= sizeof rel - 1 || !get_int(env, argv[2], &flags)) {
    napi_throw_type_error(env, NULL, "openBeneath(dirFd | dirPath, relPath, flags) takes a directory, a non-empty relative path and flags");
    return NULL;
  }
  if (strlen(rel) != rlen || rel[0] == '/') {
    napi_throw_type_error(env, NULL, "openBeneath: relPath must be relative and contain no NUL byte");
    return NULL;
  }
  if ((flags & ~OPEN_BENEATH_FLAGS) != 0) {
    napi_throw_type_error(env, NULL, "openBeneath: only O_PATH, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK and O_CLOEXEC (read-only opens) are allowed");
    return NULL;
  }
  int own = 0;
  if (dtype == napi_number) {
    if (!get_int(env, argv[0], &dirfd) || dirfd < 0) {
      napi_throw_type_error(env, NULL, "openBeneath: dirFd must be a non-negative integer");
      return NULL;
    }
  } else if (dtype == napi_string) {
    if (napi_get_value_string_utf8(env, argv[0], dir, sizeof dir, &dlen) != napi_ok || dlen == 0 ||
        dlen >= sizeof dir - 1 || strlen(dir) != dlen) {
      napi_throw_type_error(env, NULL, "openBeneath: dirPath must be a non-empty path without NUL bytes");
      return NULL;
    }
    dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) return throw_errno(env, "openBeneath: open of the directory", errno);
    own = 1;
  } else {
    napi_throw_type_error(env, NULL, "openBeneath: the first argument must be a directory fd or path");
    return NULL;
  }
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (uint64_t)(flags | O_CLOEXEC);
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd;
  do {
    fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof how);
  } while (fd < 0 && (errno == EINTR || errno == EAGAIN));
  int err = errno;
  if (own) close(dirfd);
  if (fd < 0) return throw_errno(env, "openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)", err);
  napi_value result;
  napi_create_int32(env, (int32_t)fd, &result);
  return result;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* peerPidfd(socketFd): a pidfd (close-on-exec) for the very process on the other end; the caller closes it. */
static napi_value peer_pidfd(napi_env env, napi_callback_info info) {
  int32_t sock;
  if (!int_args(env, info, 1, &sock, "peerPidfd(socketFd) takes an integer")) return NULL;
  int pidfd = -1;
  socklen_t len = sizeof pidfd;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) < 0) return throw_errno(env, "getsockopt(SO_PEERPIDFD)", errno);
  fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  napi_value result;
  napi_create_int32(env, pidfd, &result);
  return result;
}

/* pidfdSignal(pidfd, signal): signals exactly that process (ESRCH once it has exited). */
static napi_value pidfd_signal(napi_env env, napi_callback_info info) {
  int32_t a[2];
  if (!int_args(env, info, 2, a, "pidfdSignal(pidfd, signal) takes two integers")) return NULL;
  if (syscall(SYS_pidfd_send_signal, a[0], a[1], NULL, 0) < 0) return throw_errno(env, "pidfd_send_signal", errno);
  return NULL;
}

/*
 * dataExtents(fd): the file's data regions as [offset, length, offset, length, ...], found with
 * lseek(SEEK_DATA / SEEK_HOLE): what an upload of a sparse mapped-ram file must carry. A
 * filesystem without hole reporting answers one extent covering the whole file.
 */
static napi_value data_extents(napi_env env, napi_callback_info info) {
  int32_t fd;
  if (!int_args(env, info, 1, &fd, "dataExtents(fd) takes an fd")) return NULL;
  napi_value result;
  napi_create_array(env, &result);
  uint32_t n = 0;
  off_t pos = 0;
  for (;;) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;
      return throw_errno(env, "lseek(SEEK_DATA)", errno);
    }
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return throw_errno(env, "lseek(SEEK_HOLE)", errno);
    napi_value v;
    napi_create_int64(env, (int64_t)data, &v);
    napi_set_element(env, result, n++, v);
    napi_create_int64(env, (int64_t)(hole - data), &v);
    napi_set_element(env, result, n++, v);
    pos = hole;
  }
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"sendFds", NULL, send_fds, NULL, NULL, NULL, napi_default, NULL},
      {"recvFds", NULL, recv_fds, NULL, NULL, NULL, napi_default, NULL},
      {"peerCredentials", NULL, peer_credentials, NULL, NULL, NULL, napi_default, NULL},
      {"probeDirectIO", NULL, probe_direct_io, NULL, NULL, NULL, napi_default, NULL},
      {"fadviseWillNeed", NULL, fadvise_willneed, NULL, NULL, NULL, napi_default, NULL},
      {"fadviseDontNeed", NULL, fadvise_dontneed, NULL, NULL, NULL, napi_default, NULL},
      {"openBeneath", NULL, open_beneath, NULL, NULL, NULL, napi_default, NULL},
      {"peerPidfd", NULL, peer_pidfd, NULL, NULL, NULL, napi_default, NULL},
      {"pidfdSignal", NULL, pidfd_signal, NULL, NULL, NULL, napi_default, NULL},
      {"dataExtents", NULL, data_extents, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
