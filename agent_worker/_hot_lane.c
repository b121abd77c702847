/* The hot path's native lane (issue 13): the steady state of agent_worker.hot_path, in C.

   While one handed terminal is live and caught up and nothing else waits, the hot path's
   thread calls lane() instead of its own epoll loop.  lane() waits on the same epoll
   without the GIL and does what the Python loop would do for the two events of typing:

     - keys on the terminal: written to the PTY;
     - output on the PTY: read as one batch (as the Python loop reads it), appended to the
       log (after the index record the log wants each index_every seconds), then written
       to the terminal (log first, always).

   Everything else goes back to Python at once, with what was read and not yet dealt with:
   the detach key, keys on a read-only attach, keys the PTY did not take, a terminal that
   did not take a whole batch or is gone, a log that refused bytes (or its index a record),
   the PTY's end, the wake-up descriptor (another thread wants the hot path's
   lock, which the caller holds while lane() runs), any other descriptor, and the time
   trio is due to hear of the output (agent_worker.hot_path's Telling, whose rule is kept
   here too: typing on and on brought the loop back to Python each quiet interval just to
   find trio not due yet).  The rules, their limits and the formats stay in
   agent_worker/hot_path.py and agent_worker/log.py; this file only keeps them, in the one
   case where the Python loop's own cost (a scheduler-free but interpreted pass per
   event, ~100 us of CPU a key on a small VM) was most of a keystroke's echo.

   lane(epoll_fd, pty_fd, log_fd, term_fd, detach_key, read_only,
        due_at, latest_at, agent_untold, quiet, longest,
        index_at, cap, batch_max, read_size, drained_below,
        key_at, echo_left, echo_window, echo_budget,
        index_fd, log_end, last_indexed, index_every)
     -> (why, news, rest, unshown, last_at, first_mono, last_mono,
         key_at, echo_left, agent_first, agent_last, more, indexed_at, last_indexed)

   Times are time.monotonic()'s, in seconds.  due_at: when trio is due to hear now (-1:
   not yet); latest_at: the latest it may hear, whatever output comes (-1: none yet);
   agent_untold: trio has not heard of some of the agent's own output yet.  Each append
   makes trio due quiet after it, but not after latest_at, nor after longest from the
   first of the agent's own output untold (with none untold at the call, this call's
   first append that is not a keystroke's echo).

   The echo rule (agent_worker.hot_path's ECHO_WINDOW): keys written to the PTY set key_at
   (-1: never) and echo_left to echo_budget (0 if a CR or LF is among them); an append
   within echo_window of key_at and within echo_left is their echo (echo_left shrinks by
   it), any other is the agent's own and ends the echo (echo_left 0).  agent_first, agent_last: the first and the last of
   this call's appends that were the agent's own (0: none).

   The PTY and the terminal are in the epoll edge-triggered (agent_worker.hot_path's EDGE):
   a read that fills its buffer may have left more that no event will announce, so lane()
   returns WHY_MORE after dealing with it, more telling which (MORE_PTY, MORE_KEYS), and
   Python reads them again before it waits.  A hang-up may come in the same edge as the
   last output or keys: one reported sets MORE_PTY_HUNG_UP or MORE_KEYS_HUNG_UP (with
   MORE_PTY or MORE_KEYS), and Python reads that descriptor to its end.

   The log's index (agent_worker.log's OutputLog.append keeps the same rule and owns the
   record, "!Qd": the log offset a batch starts at and its time.time()): before a batch,
   once time.time() reaches index_at (0: never), a record for the offset it starts at
   (log_end, the log's end at the call, plus this call's news), unless that offset is
   last_indexed; then index_at moves index_every on.  indexed_at: the time of this
   call's last record (0: none), last_indexed its offset.  A record that cannot be written
   returns the batch as WHY_UNLOGGED (Python's append tries again, and meets the error).

   news: every byte appended to the log by this call, in order.  unshown: how many of its
   last bytes the terminal has not taken (its carry).  rest: bytes read and not dealt
   with (keys, or output not logged).  last_at: time.time() of the last append (0: none);
   first_mono, last_mono: time.monotonic() of the first and the last append (0: none),
   for the hot path's rule of when trio hears. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

enum {
    WHY_DUE = 0,        /* trio is due to hear, or news reached cap */
    WHY_WOKEN = 1,      /* the wake-up descriptor, or one lane() does not know */
    WHY_KEYS = 2,       /* rest: keys for Python (detach key, read-only, PTY full) */
    WHY_TERM_END = 3,   /* the terminal hung up (read EOF or error) */
    WHY_UNLOGGED = 4,   /* rest: output read, not logged (log error, index due) */
    WHY_PTY_END = 5,    /* the PTY reported its end or an error: Python reads it again */
    WHY_SHORT = 6,      /* the terminal did not take all of the last batch (unshown) */
    WHY_TERM_GONE = 7,  /* writing to the terminal failed (unshown: the last batch) */
    WHY_MORE = 8,       /* a read filled its buffer: more may wait (more says where) */
};

enum { MORE_PTY = 1, MORE_KEYS = 2, MORE_PTY_HUNG_UP = 4, MORE_KEYS_HUNG_UP = 8 };

#define KEY_BUF 65536

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Write all of buf to a blocking-or-not fd; how many bytes went (stops at an error). */
static Py_ssize_t write_all(int fd, const char *buf, Py_ssize_t len, int *err) {
    Py_ssize_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, buf + done, (size_t)(len - done));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            *err = errno;
            break;
        }
        done += w;
    }
    return done;
}

static ssize_t read_retrying(int fd, char *buf, size_t len) {
    ssize_t r;
    do {
        r = read(fd, buf, len);
    } while (r < 0 && errno == EINTR);
    return r;
}

typedef struct {
    int epoll_fd, pty_fd, log_fd, term_fd, read_only, index_fd;
    const char *key;
    Py_ssize_t key_len;
    double due_at, latest_at, quiet, longest;
    int agent_untold;
    double index_at, index_every, indexed_at;
    long long log_end, last_indexed;
    Py_ssize_t cap, batch_max, read_size, drained_below;
    double key_at, echo_window;
    Py_ssize_t echo_left, echo_budget;
    /* results */
    char *news;           /* cap + batch_max bytes */
    Py_ssize_t news_len, unshown;
    char *rest;           /* KEY_BUF bytes (keys) or points into news (output) */
    Py_ssize_t rest_len;
    double last_at, first_mono, last_mono, agent_first, agent_last;
    int more;             /* MORE_*: descriptors a full read may have left more on */
} Lane;

/* A key event; returns a WHY or -1 to go on. */
static int on_keys(Lane *l) {
    ssize_t r = read_retrying(l->term_fd, l->rest, KEY_BUF);
    if (r < 0 && errno == EAGAIN)
        return -1;
    if (r <= 0)
        return WHY_TERM_END;
    if (r == KEY_BUF)
        l->more |= MORE_KEYS;
    if (l->read_only || (l->key_len && memmem(l->rest, (size_t)r, l->key, (size_t)l->key_len))) {
        l->rest_len = r;
        return WHY_KEYS;
    }
    ssize_t w;
    do {
        w = write(l->pty_fd, l->rest, (size_t)r);
    } while (w < 0 && errno == EINTR);
    if (w > 0) {
        l->key_at = mono_now();
        int enter = memchr(l->rest, '\r', (size_t)w) || memchr(l->rest, '\n', (size_t)w);
        l->echo_left = enter ? 0 : l->echo_budget;
    }
    if (w == r)
        return l->more ? WHY_MORE : -1;
    if (w < 0)
        w = 0; /* EAGAIN (Python queues them), or the agent has gone (Python sees it) */
    memmove(l->rest, l->rest + w, (size_t)(r - w));
    l->rest_len = r - w;
    return WHY_KEYS;
}

/* The index record for log offset ``offset`` at ``at`` (see the top); 0 if not written. */
static int write_index(int fd, long long offset, double at) {
    unsigned char record[16];
    uint64_t o = htobe64((uint64_t)offset), t;
    memcpy(&t, &at, sizeof t);
    t = htobe64(t);
    memcpy(record, &o, 8);
    memcpy(record + 8, &t, 8);
    ssize_t w;
    do {
        w = write(fd, record, sizeof record);
    } while (w < 0 && errno == EINTR);
    return w >= 0;
}

/* An output event: one batch read, logged, shown; returns a WHY or -1 to go on. */
static int on_output(Lane *l, double *deadline) {
    char *batch = l->news + l->news_len;
    Py_ssize_t len = 0;
    int ended = 0;
    while (len < l->batch_max) {
        Py_ssize_t want = l->batch_max - len;
        if (want > l->read_size)
            want = l->read_size;
        ssize_t r = read_retrying(l->pty_fd, batch + len, (size_t)want);
        if (r < 0 && errno == EAGAIN)
            break;
        if (r <= 0) {
            ended = 1; /* EOF, EIO (every slave closed), or another error Python raises */
            break;
        }
        len += r;
        if (r < l->drained_below)
            break; /* the agent wrote a little and stopped: no read to hear EAGAIN */
    }
    if (len >= l->batch_max)
        l->more |= MORE_PTY;
    if (len == 0)
        return ended ? WHY_PTY_END : -1;
    double wall = wall_now();
    if (l->index_at > 0 && wall >= l->index_at && l->log_end + l->news_len != l->last_indexed) {
        long long offset = l->log_end + l->news_len;
        if (!write_index(l->index_fd, offset, wall)) {
            l->rest = batch, l->rest_len = len;
            return WHY_UNLOGGED;
        }
        l->indexed_at = wall, l->last_indexed = offset;
        l->index_at = wall + l->index_every;
    }
    int err = 0;
    Py_ssize_t logged = write_all(l->log_fd, batch, len, &err);
    if (logged > 0) {
        l->news_len += logged;
        l->last_at = wall;
        double now = l->last_mono = mono_now();
        if (l->first_mono == 0)
            l->first_mono = now;
        if (l->key_at >= 0 && now - l->key_at <= l->echo_window && logged <= l->echo_left) {
            l->echo_left -= logged; /* a keystroke's echo */
        } else {
            l->echo_left = 0;
            l->agent_last = now;
            if (l->agent_first == 0)
                l->agent_first = now;
            if (!l->agent_untold) {
                l->agent_untold = 1;
                if (l->latest_at < 0 || now + l->longest < l->latest_at)
                    l->latest_at = now + l->longest;
            }
        }
        double quiet_due = now + l->quiet;
        *deadline = l->latest_at >= 0 && l->latest_at < quiet_due ? l->latest_at : quiet_due;
    }
    if (logged < len) {
        l->unshown = logged; /* logged but not shown: the terminal catches up from the log */
        l->rest = batch + logged, l->rest_len = len - logged;
        return WHY_UNLOGGED;
    }
    ssize_t t;
    do {
        t = write(l->term_fd, batch, (size_t)len);
    } while (t < 0 && errno == EINTR);
    if (t < 0 && errno != EAGAIN) {
        l->unshown = len;
        return WHY_TERM_GONE;
    }
    if (t < len) {
        l->unshown = len - (t < 0 ? 0 : t);
        return WHY_SHORT;
    }
    if (ended)
        return WHY_PTY_END;
    if (l->news_len >= l->cap)
        return WHY_DUE;
    return l->more ? WHY_MORE : -1;
}

/* A hang-up in an event: Python reads that descriptor to its end (see the top). */
static void note_hang_up(Lane *l, const struct epoll_event *event) {
    if (!(event->events & (EPOLLHUP | EPOLLERR)))
        return;
    if (event->data.fd == l->pty_fd)
        l->more |= MORE_PTY | MORE_PTY_HUNG_UP;
    else if (event->data.fd == l->term_fd)
        l->more |= MORE_KEYS | MORE_KEYS_HUNG_UP;
}

static int run(Lane *l) {
    double deadline = l->due_at;
    for (;;) {
        int wait_ms = -1;
        if (deadline >= 0) {
            double left = deadline - mono_now();
            if (left <= 0)
                return WHY_DUE;
            wait_ms = (int)(left * 1000) + 1;
        }
        struct epoll_event events[4];
        int n = epoll_wait(l->epoll_fd, events, 4, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return WHY_WOKEN; /* Python's own poll of the same epoll raises it */
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd, why;
            note_hang_up(l, &events[i]);
            if (fd == l->term_fd)
                why = on_keys(l);
            else if (fd == l->pty_fd)
                why = on_output(l, &deadline);
            else
                why = WHY_WOKEN; /* the wake-up descriptor, or another: Python's loop */
            if (why < 0 && l->more)
                why = WHY_MORE; /* a hang-up: Python reads the rest */
            if (why >= 0) {
                /* Edge-triggered: an event not reached in this round is not reported
                   again; Python reads those descriptors before it waits. */
                for (int j = i + 1; j < n; j++) {
                    note_hang_up(l, &events[j]);
                    if (events[j].data.fd == l->pty_fd)
                        l->more |= MORE_PTY;
                    else if (events[j].data.fd == l->term_fd)
                        l->more |= MORE_KEYS;
                }
                return why;
            }
        }
    }
}

static PyObject *lane(PyObject *self, PyObject *args) {
    Lane l;
    memset(&l, 0, sizeof l);
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "iiiiy*pddpdddnnnndndniLLd", &l.epoll_fd, &l.pty_fd,
                          &l.log_fd, &l.term_fd, &key, &l.read_only, &l.due_at,
                          &l.latest_at, &l.agent_untold, &l.quiet, &l.longest, &l.index_at,
                          &l.cap, &l.batch_max, &l.read_size, &l.drained_below,
                          &l.key_at, &l.echo_left, &l.echo_window, &l.echo_budget,
                          &l.index_fd, &l.log_end, &l.last_indexed, &l.index_every))
        return NULL;
    if (l.cap < 0 || l.batch_max <= 0 || l.read_size <= 0 || l.cap > PY_SSIZE_T_MAX / 2 ||
        l.batch_max > PY_SSIZE_T_MAX / 2 || l.echo_left < 0 || l.echo_budget < 0) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "lane: bad sizes");
        return NULL;
    }
    l.key = key.buf, l.key_len = key.len;
    PyObject *news = PyBytes_FromStringAndSize(NULL, l.cap + l.batch_max);
    char *keys = PyMem_RawMalloc(KEY_BUF);
    if (news == NULL || keys == NULL) {
        Py_XDECREF(news);
        PyMem_RawFree(keys);
        PyBuffer_Release(&key);
        return PyErr_NoMemory();
    }
    l.news = PyBytes_AS_STRING(news);
    l.rest = keys;
    int why;
    Py_BEGIN_ALLOW_THREADS
    why = run(&l);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&key);
    PyObject *rest = PyBytes_FromStringAndSize(l.rest, l.rest_len);
    PyMem_RawFree(keys);
    if (rest == NULL || _PyBytes_Resize(&news, l.news_len) < 0) {
        Py_XDECREF(rest);
        Py_XDECREF(news);
        return NULL;
    }
    return Py_BuildValue("(iNNnddddnddidL)", why, news, rest, l.unshown, l.last_at,
                         l.first_mono, l.last_mono, l.key_at, l.echo_left, l.agent_first,
                         l.agent_last, l.more, l.indexed_at, l.last_indexed);
}

static PyMethodDef methods[] = {
    {"lane", lane, METH_VARARGS, "The hot path's steady state without the GIL (see the source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_hot_lane", NULL, -1, methods};

PyMODINIT_FUNC PyInit__hot_lane(void) { return PyModule_Create(&module); }
