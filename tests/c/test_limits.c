/*
 * The C test of what keeps a long-running service alive: cancellation, timeouts, the memory
 * budget, a real memory limit, fork and the log callback. scripts/test-bindings.sh links it
 * against libemcoder.so and runs it, and runs it again under valgrind (where the fork and
 * memory-limit children are skipped, see main).
 *
 * Usage: test_limits <model_dir>      (the fixture tests/fixtures/tiny-vocab-bf16)
 *
 * Checks:
 *   - a cancel flag set before the call, a flag set by another thread during a long call, and
 *     a timeout each give EMCODER_ERR_CANCELLED promptly; the model stays usable and gives the
 *     same numbers afterwards;
 *   - memory_budget: a call needing more scratch than the budget fails with
 *     EMCODER_ERR_OUT_OF_MEMORY naming memory_budget; while a running call holds the budget, a
 *     call with fail_fast_on_memory fails at once, and a waiting call honours its timeout (and
 *     is reported to the log callback);
 *   - the log callback: load and arena messages at their levels, none once removed;
 *   - fork after load: the child's predict fails with EMCODER_ERR_INVALID_ARGUMENT instead of
 *     hanging (an alarm kills a hung child), it can free that model and load a new one;
 *   - RLIMIT_AS: in a child under a limit of its current address space + 256 MiB, a predict
 *     whose scratch (GiBs) cannot be allocated returns EMCODER_ERR_OUT_OF_MEMORY instead of
 *     aborting, and a small predict afterwards works.
 * Exit status 0 when every check passes.
 */
#define _POSIX_C_SOURCE 200809L /* nanosleep, clock_gettime */
#include "check.h"
#include "emcoder.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

CHECK_COUNTERS;

/* Under valgrind (EMCODER_TEST_UNDER_VALGRIND=1) everything runs ~50x slower. */
static int under_valgrind = 0;

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Sets a cancellation flag as the header asks: an atomic store. */
static void set_flag(EmcoderCancelFlag *flag, int32_t value) {
    __atomic_store_n((int32_t *)flag, value, __ATOMIC_RELAXED);
}

/* `n` texts of `words` words each ("w w w ..."), freed with free_texts. */
static char **make_texts(size_t n, size_t words) {
    char **t = xcalloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        t[i] = xcalloc(2 * words + 1, 1);
        for (size_t w = 0; w < words; w++) memcpy(t[i] + 2 * w, w % 2 ? "b " : "a ", 2);
    }
    return t;
}

static void free_texts(char **t, size_t n) {
    for (size_t i = 0; i < n; i++) free(t[i]);
    free(t);
}

static EmcoderModel *load(const char *dir, EmcoderModelParams *params) {
    EmcoderModel *m = NULL;
    EmcoderError *err = NULL;
    if (emcoder_model_load(dir, params, &m, &err) != EMCODER_OK) {
        fprintf(stderr, "cannot load %s: %s\n", dir, emcoder_error_message(err));
        emcoder_error_free(err);
        exit(1);
    }
    return m;
}

/* The deterministic logits of one short text, to compare the model before and after. */
static void logits_of(const EmcoderModel *m, float *out, size_t n) {
    const char *t[] = {"I am so happy you are here!"};
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.n_samples = 0;
    EmcoderPrediction *p = NULL;
    CHECK(emcoder_predict(m, t, 1, &o, &p, NULL) == EMCODER_OK);
    const float *z = emcoder_prediction_logits(p, 0);
    CHECK(z != NULL);
    if (z) memcpy(out, z, n * sizeof(float));
    emcoder_prediction_free(p);
}

/* ---- Cancellation ---- */

typedef struct {
    EmcoderCancelFlag *flag;
    long after_ms;
    double set_at;
} Canceller;

static void *cancel_later(void *arg) {
    Canceller *c = arg;
    sleep_ms(c->after_ms);
    c->set_at = now_s();
    set_flag(c->flag, 1);
    return NULL;
}

static void test_cancellation(const char *dir) {
    EmcoderModelParams params = emcoder_model_default_params();
    params.n_threads = 2;
    EmcoderModel *m = load(dir, &params);
    float before[64], after[64];
    size_t nl = emcoder_model_num_labels(m);
    CHECK(nl <= 64);
    logits_of(m, before, nl);
    EmcoderPrediction *p = (EmcoderPrediction *)&p;
    EmcoderError *err = NULL;

    /* A flag set before the call. */
    EmcoderCancelFlag flag = 1;
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.cancel = &flag;
    const char *one[] = {"ok"};
    int32_t code = emcoder_predict(m, one, 1, &o, &p, &err);
    CHECK(err && strstr(emcoder_error_message(err), "cancelled") != NULL);
    CHECK_ERR(code, EMCODER_ERR_CANCELLED, err);
    CHECK(p == NULL);
    set_flag(&flag, 0);
    CHECK_ERR(emcoder_predict(m, one, 1, &o, &p, &err), EMCODER_OK, err);
    emcoder_prediction_free(p);

    /* A flag set by another thread during a call of millions of rows (seconds of work):
     * the call returns within about one layer's work of it. */
    size_t n = 16, words = 200;
    char **texts = make_texts(n, words);
    o = emcoder_predict_default_options();
    o.cancel = &flag;
    o.n_samples = 2000;
    Canceller c = {&flag, under_valgrind ? 2000 : 50, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, cancel_later, &c) == 0);
    double t0 = now_s();
    code = emcoder_predict(m, (const char *const *)texts, n, &o, &p, &err);
    double done = now_s();
    pthread_join(th, NULL);
    CHECK_ERR(code, EMCODER_ERR_CANCELLED, err);
    printf("cancel flag: returned %.0f ms after the flag was set (%.0f ms in all)\n",
           (done - c.set_at) * 1e3, (done - t0) * 1e3);
    CHECK(c.set_at > 0 && done - c.set_at < (under_valgrind ? 60.0 : 2.0));
    set_flag(&flag, 0);

    /* A timeout: the same call with 1 ms to run. */
    o.cancel = NULL;
    o.timeout_ms = 1;
    err = NULL;
    t0 = now_s();
    code = emcoder_predict(m, (const char *const *)texts, n, &o, &p, &err);
    CHECK(err && strstr(emcoder_error_message(err), "deadline") != NULL);
    CHECK_ERR(code, EMCODER_ERR_CANCELLED, err);
    CHECK(now_s() - t0 < (under_valgrind ? 60.0 : 2.0));
    free_texts(texts, n);

    /* The model stays usable, with the same numbers. */
    logits_of(m, after, nl);
    CHECK(memcmp(before, after, nl * sizeof(float)) == 0);
    emcoder_model_free(m);
}

/* ---- The log callback ---- */

typedef struct {
    pthread_mutex_t lock;
    int count[3];
    /* Whole messages: the load message names the CPU, every kernel family and the budget. */
    char last[3][4096];
} LogSink;

static void on_log(int32_t level, const char *message, void *user) {
    LogSink *s = user;
    if (level < 0 || level > 2) return;
    pthread_mutex_lock(&s->lock);
    s->count[level]++;
    snprintf(s->last[level], sizeof s->last[level], "%s", message);
    pthread_mutex_unlock(&s->lock);
}

static int log_count(LogSink *s, int level) {
    pthread_mutex_lock(&s->lock);
    int n = s->count[level];
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void test_log_callback(const char *dir) {
    static LogSink sink = {PTHREAD_MUTEX_INITIALIZER, {0, 0, 0}, {"", "", ""}};
    CHECK(emcoder_set_log_callback(on_log, &sink, 7) == EMCODER_ERR_INVALID_ARGUMENT);
    CHECK(emcoder_set_log_callback(on_log, &sink, EMCODER_LOG_DEBUG) == EMCODER_OK);
    EmcoderModelParams params = emcoder_model_default_params();
    params.n_threads = 1;
    EmcoderModel *m = load(dir, &params);
    /* At load: the kernels and the memory budget. */
    CHECK(log_count(&sink, EMCODER_LOG_INFO) >= 1);
    CHECK(strstr(sink.last[EMCODER_LOG_INFO], "kernels") != NULL);
    CHECK(strstr(sink.last[EMCODER_LOG_INFO], "budget") != NULL);
    /* A first call grows the scratch arena (a debug message). */
    const char *t[] = {"hello there"};
    EmcoderPrediction *p = NULL;
    CHECK(emcoder_predict(m, t, 1, NULL, &p, NULL) == EMCODER_OK);
    emcoder_prediction_free(p);
    CHECK(log_count(&sink, EMCODER_LOG_DEBUG) >= 1);
    CHECK(strstr(sink.last[EMCODER_LOG_DEBUG], "arena") != NULL);
    printf("log: %s\n", sink.last[EMCODER_LOG_INFO]);
    /* Removed: nothing more arrives. */
    CHECK(emcoder_set_log_callback(NULL, NULL, EMCODER_LOG_DEBUG) == EMCODER_OK);
    int before = log_count(&sink, EMCODER_LOG_INFO);
    EmcoderModel *m2 = load(dir, &params);
    CHECK(log_count(&sink, EMCODER_LOG_INFO) == before);
    emcoder_model_free(m2);
    emcoder_model_free(m);
}

/* ---- The memory budget ---- */

typedef struct {
    const EmcoderModel *m;
    EmcoderCancelFlag flag;
    int32_t code;
} Holder;

/* One text of 400 words x 20000 samples: 8M rows, minutes of work, the whole budget. */
static const char *HEAVY_TEXT = NULL;

static void *hold_budget(void *arg) {
    Holder *h = arg;
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.n_samples = 20000;
    o.cancel = &h->flag;
    EmcoderPrediction *p = NULL;
    h->code = emcoder_predict(h->m, &HEAVY_TEXT, 1, &o, &p, NULL);
    emcoder_prediction_free(p);
    return NULL;
}

static void test_memory_budget(const char *dir) {
    EmcoderModelParams params = emcoder_model_default_params();
    params.n_threads = 2;
    params.memory_budget = 4u << 20;
    EmcoderModel *m = load(dir, &params);
    CHECK(emcoder_model_memory_budget(m) == 4u << 20);
    CHECK(emcoder_model_scratch_bound(m) > 4u << 20);
    EmcoderPrediction *p = NULL;
    EmcoderError *err = NULL;
    const char *small[] = {"ok"};
    CHECK_ERR(emcoder_predict(m, small, 1, NULL, &p, &err), EMCODER_OK, err);
    emcoder_prediction_free(p);

    /* 32 texts x 100 words x 50 samples: a chunk of max_rows rows, more than 4 MiB. */
    char **texts = make_texts(32, 100);
    int32_t code = emcoder_predict(m, (const char *const *)texts, 32, NULL, &p, &err);
    CHECK(err && strstr(emcoder_error_message(err), "memory_budget") != NULL);
    CHECK_ERR(code, EMCODER_ERR_OUT_OF_MEMORY, err);
    CHECK(p == NULL);
    free_texts(texts, 32);
    CHECK_ERR(emcoder_predict(m, small, 1, NULL, &p, &err), EMCODER_OK, err);
    emcoder_prediction_free(p);
    emcoder_model_free(m);

    /* A budget of exactly one worst-case call, held by a long call on another thread. */
    params.memory_budget = 0;
    m = load(dir, &params);
    uint64_t bound = emcoder_model_scratch_bound(m);
    emcoder_model_free(m);
    params.memory_budget = bound;
    m = load(dir, &params);
    char **heavy = make_texts(1, 400);
    HEAVY_TEXT = heavy[0];
    Holder h = {m, 0, 1};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, hold_budget, &h) == 0);
    sleep_ms(under_valgrind ? 3000 : 300); /* it tokenizes one text, then holds the budget */

    /* Ten words x 20000 samples: quick to tokenize, and a whole chunk of max_rows rows. */
    const char *wide[] = {"a b a b a b a b a b"};
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.n_samples = 20000;
    o.fail_fast_on_memory = 1;
    o.timeout_ms = 5000; /* should the holder not hold it yet */
    err = NULL;
    code = emcoder_predict(m, wide, 1, &o, &p, &err);
    CHECK(err && strstr(emcoder_error_message(err), "taken") != NULL);
    CHECK_ERR(code, EMCODER_ERR_OUT_OF_MEMORY, err);

    /* Without fail_fast the call waits (the log callback hears of it) until its timeout. */
    static LogSink sink = {PTHREAD_MUTEX_INITIALIZER, {0, 0, 0}, {"", "", ""}};
    CHECK(emcoder_set_log_callback(on_log, &sink, EMCODER_LOG_WARN) == EMCODER_OK);
    o.fail_fast_on_memory = 0;
    o.timeout_ms = under_valgrind ? 3000 : 200;
    double t0 = now_s();
    code = emcoder_predict(m, wide, 1, &o, &p, &err);
    double waited = now_s() - t0;
    CHECK_ERR(code, EMCODER_ERR_CANCELLED, err);
    CHECK(waited >= (double)o.timeout_ms * 1e-3 * 0.95 && waited < (under_valgrind ? 60.0 : 3.0));
    CHECK(emcoder_set_log_callback(NULL, NULL, EMCODER_LOG_WARN) == EMCODER_OK);
    CHECK(log_count(&sink, EMCODER_LOG_WARN) >= 1);
    CHECK(strstr(sink.last[EMCODER_LOG_WARN], "waits for scratch memory") != NULL);

    /* The holder was running all along: cancelling it ends it. */
    set_flag(&h.flag, 1);
    pthread_join(th, NULL);
    CHECK(h.code == EMCODER_ERR_CANCELLED);
    CHECK_ERR(emcoder_predict(m, small, 1, NULL, &p, &err), EMCODER_OK, err);
    emcoder_prediction_free(p);
    free_texts(heavy, 1);
    emcoder_model_free(m);
}

/* ---- Processes ---- */

/* Waits for a child and checks that it exited with status 0 (not killed by a signal). */
static void expect_child_ok(pid_t pid, const char *what) {
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    if (WIFSIGNALED(status))
        fprintf(stderr, "%s: the child was killed by signal %d%s\n", what, WTERMSIG(status),
                WTERMSIG(status) == SIGALRM ? " (it hung)" : "");
    else if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        fprintf(stderr, "%s: the child exited with %d\n", what, WEXITSTATUS(status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A child forked after the load cannot use the model: an error, not a hang. */
static void test_fork(const char *dir) {
    EmcoderModelParams params = emcoder_model_default_params();
    params.n_threads = 2;
    EmcoderModel *m = load(dir, &params);
    const char *t[] = {"ok"};
    EmcoderPrediction *p = NULL;
    CHECK(emcoder_predict(m, t, 1, NULL, &p, NULL) == EMCODER_OK);
    emcoder_prediction_free(p);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        EmcoderError *err = NULL;
        int ok = emcoder_predict(m, t, 1, NULL, &p, &err) == EMCODER_ERR_INVALID_ARGUMENT;
        ok &= p == NULL && strstr(emcoder_error_message(err), "fork") != NULL;
        if (!ok) fprintf(stderr, "child: %s\n", emcoder_error_message(err));
        emcoder_error_free(err);
        emcoder_model_free(m); /* does not wait for threads the child does not have */
        EmcoderModel *mine = load(dir, &params);
        ok &= emcoder_predict(mine, t, 1, NULL, &p, NULL) == EMCODER_OK;
        emcoder_prediction_free(p);
        emcoder_model_free(mine);
        fflush(NULL);
        _exit(ok ? 0 : 1);
    }
    expect_child_ok(pid, "fork");
    /* The parent's model is untouched. */
    CHECK(emcoder_predict(m, t, 1, NULL, &p, NULL) == EMCODER_OK);
    emcoder_prediction_free(p);
    emcoder_model_free(m);
}

/* The address space of this process, in bytes (VmSize), or 0. */
static size_t address_space(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %zu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

/* Under a real limit (RLIMIT_AS), a predict whose scratch cannot be allocated returns
 * EMCODER_ERR_OUT_OF_MEMORY; nothing aborts, and a small predict afterwards works. */
static void test_memory_limit(const char *dir) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(120);
        EmcoderModelParams params = emcoder_model_default_params();
        params.n_threads = 2;
        params.max_rows = 1u << 22; /* chunks of up to 4M rows: GiBs of scratch */
        EmcoderModel *m = load(dir, &params);
        const char *small[] = {"I am so happy you are here!"};
        EmcoderPrediction *p = NULL;
        EmcoderError *err = NULL;
        int ok = emcoder_predict(m, small, 1, NULL, &p, NULL) == EMCODER_OK;
        emcoder_prediction_free(p);
        size_t vm = address_space();
        struct rlimit lim = {vm + (256u << 20), vm + (256u << 20)};
        ok &= vm > 0 && setrlimit(RLIMIT_AS, &lim) == 0;
        /* 32 texts x 500 words x 128 samples = 2M rows in one chunk: ~3.5 GB of scratch. */
        char **texts = make_texts(32, 500);
        EmcoderPredictOptions o = emcoder_predict_default_options();
        o.n_samples = 128;
        int32_t code = emcoder_predict(m, (const char *const *)texts, 32, &o, &p, &err);
        printf("memory limit: VmSize %zu MB + 256 MB; the big call: %s (%s)\n", vm >> 20,
               emcoder_error_code_name(code), emcoder_error_message(err));
        ok &= code == EMCODER_ERR_OUT_OF_MEMORY && p == NULL;
        emcoder_error_free(err);
        free_texts(texts, 32);
        ok &= emcoder_predict(m, small, 1, NULL, &p, NULL) == EMCODER_OK;
        ok &= emcoder_prediction_n_samples(p, 0) == EMCODER_DEFAULT_SAMPLES;
        emcoder_prediction_free(p);
        emcoder_model_free(m);
        fflush(NULL);
        _exit(ok ? 0 : 1);
    }
    expect_child_ok(pid, "memory limit");
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <model_dir>\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    const char *v = getenv("EMCODER_TEST_UNDER_VALGRIND");
    under_valgrind = v && strcmp(v, "1") == 0;
    CHECK(emcoder_abi_version() >= EMCODER_ABI_VERSION);

    test_cancellation(dir);
    test_log_callback(dir);
    test_memory_budget(dir);
    if (under_valgrind) {
        /* A forked child holds memory owned by threads it does not have (fork copies one
         * thread), which valgrind reports as leaked; RLIMIT_AS fights valgrind's own use of
         * the address space. Both run in the native runs. */
        printf("fork and memory limit: skipped under valgrind\n");
    } else {
        test_fork(dir);
        test_memory_limit(dir);
    }

    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
