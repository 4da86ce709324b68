/*
 * Soak test of libemcoder as a long-running service uses it: many threads share one model and
 * predict (random texts, sizes, sample counts, seeds, both stopping rules, deadlines and
 * cancellation, invalid input), and now and then load, use and free a model of their own,
 * for a fixed time. Checks:
 *   - every successful result equals, bit for bit, the serial result of the same (text,
 *     samples, seed, tolerance or decision error) computed alone before the threads start;
 *   - every failure is the expected code (CANCELLED for a stopped call, INVALID_UTF8 for
 *     invalid UTF-8) with a message;
 *   - no thread hangs: a watchdog fails the run when a thread finishes no call for 120 s;
 *   - memory returns to its baseline: the resident set after the run (threads joined, their
 *     models freed, malloc_trim) is within 64 MB of the one after the warm-up round.
 *
 *   soak MODEL_DIR SECONDS [THREADS]      (scripts/soak.sh builds and runs it)
 */
#define _GNU_SOURCE
#include "check.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

CHECK_COUNTERS;
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;

#define N_TEXTS 12
#define N_CONFIGS 6
#define NL 28

static const char *TEXTS[N_TEXTS] = {
    "I am so happy you are here!",
    "This is the worst day ever.",
    "",
    "ok",
    "Thank you so much for the help, I really appreciate it!!!",
    "Why would anyone do that? I don't get it.",
    "Ünïcödé naïve café — emojis 😀🙃 and CJK 你好",
    "wow wow wow wow wow wow wow wow wow wow wow wow wow wow wow wow wow wow wow wow wow",
    "I'm scared and nervous about tomorrow, but also a bit excited.",
    "lol",
    "Sorry for your loss. Sending love to you and your family.",
    "The meeting was moved to Tuesday at 3pm in room 204, bring the printed report.",
};

typedef struct {
    uint32_t samples;
    uint64_t seed;
    float tolerance;
    double decision_error;
} Config;
static const Config CONFIGS[N_CONFIGS] = {
    {0, 1, 0.0f, 0.0},   {1, 9, 0.0f, 0.0},    {5, 7, 0.0f, 0.0},
    {20, 42, 0.0f, 0.0}, {50, 3, 0.05f, 0.0}, {40, 11, 0.0f, 0.01},
};

/* Serial reference: labels (mean, std, ...) and samples drawn per (config, text). */
static EmcoderLabelStats ref_stats[N_CONFIGS][N_TEXTS][NL];
static uint32_t ref_samples[N_CONFIGS][N_TEXTS];

static const char *model_dir;
static EmcoderModel *shared;
static double deadline;
static int n_threads;
static atomic_long progress[64];
static atomic_long ops_by_kind[6];
static atomic_int stop_all;
static const char *KIND_NAMES[6] = {"predict", "deadline/cancel", "own model", "invalid utf-8",
                                    "fail-fast memory", "accessors"};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double rss_mb(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (double)sysconf(_SC_PAGESIZE) / 1e6;
}

static _Thread_local int current_kind;

static void fail(const char *what, int tid, int cfg, int text) {
    pthread_mutex_lock(&fail_lock);
    fprintf(stderr, "soak: thread %d: %s (%s call, config %d, text %d)\n", tid, what,
            KIND_NAMES[current_kind], cfg, text);
    failures++;
    pthread_mutex_unlock(&fail_lock);
}

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static EmcoderPredictOptions options_of(int c) {
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.n_samples = CONFIGS[c].samples;
    o.seed = CONFIGS[c].seed;
    o.tolerance = CONFIGS[c].tolerance;
    o.decision_error = CONFIGS[c].decision_error;
    return o;
}

/* Field by field, floats by their bits (the struct's padding bytes are unspecified). */
static int same_stats(const EmcoderLabelStats *a, const EmcoderLabelStats *b) {
    for (int j = 0; j < NL; j++) {
        const float x[5] = {a[j].mean, a[j].std, a[j].total_entropy, a[j].aleatoric, a[j].epistemic};
        const float y[5] = {b[j].mean, b[j].std, b[j].total_entropy, b[j].aleatoric, b[j].epistemic};
        if (memcmp(x, y, sizeof x) != 0 || a[j].predicted != b[j].predicted) return 0;
    }
    return 1;
}

/* Compares a prediction of texts `idx` (config c) with the serial reference. */
static void compare(const EmcoderPrediction *p, const int *idx, int n, int c, int tid) {
    if (emcoder_prediction_num_texts(p) != (size_t)n) fail("wrong number of texts", tid, c, -1);
    for (int i = 0; i < n; i++) {
        const EmcoderLabelStats *l = emcoder_prediction_labels(p, i);
        if (!l || !same_stats(l, ref_stats[c][idx[i]]))
            fail("result differs from the serial run", tid, c, idx[i]);
        if (emcoder_prediction_n_samples(p, i) != ref_samples[c][idx[i]])
            fail("samples drawn differ from the serial run", tid, c, idx[i]);
    }
}

static int predict_some(EmcoderModel *m, const int *idx, int n, EmcoderPredictOptions *o,
                        EmcoderPrediction **out, EmcoderError **err) {
    const char *t[8];
    for (int i = 0; i < n; i++) t[i] = TEXTS[idx[i]];
    return emcoder_predict(m, t, (size_t)n, o, out, err);
}

static void *worker(void *arg) {
    int tid = (int)(intptr_t)arg;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(tid + 1);
    while (!atomic_load(&stop_all) && now() < deadline) {
        int kind = (int)(next(&rng) % 100);
        kind = kind < 55 ? 0 : kind < 70 ? 1 : kind < 74 ? 2 : kind < 84 ? 3 : kind < 92 ? 4 : 5;
        int c = (int)(next(&rng) % N_CONFIGS);
        int n = 1 + (int)(next(&rng) % 6);
        int idx[8];
        for (int i = 0; i < n; i++) idx[i] = (int)(next(&rng) % N_TEXTS);
        EmcoderPredictOptions o = options_of(c);
        EmcoderPrediction *p = NULL;
        EmcoderError *err = NULL;
        int rc;
        current_kind = kind;
        switch (kind) {
        case 0: /* predict on the shared model */
            rc = predict_some(shared, idx, n, &o, &p, &err);
            if (rc != EMCODER_OK) fail(emcoder_error_message(err), tid, c, idx[0]);
            else compare(p, idx, n, c, tid);
            break;
        case 1: { /* a deadline or a cancel flag: the call finishes, or stops cleanly */
            EmcoderCancelFlag flag = (next(&rng) % 2) ? 1 : 0;
            if (flag) o.cancel = &flag;
            else o.timeout_ms = 1 + next(&rng) % 3;
            rc = predict_some(shared, idx, n, &o, &p, &err);
            if (rc == EMCODER_OK) compare(p, idx, n, c, tid);
            else if (rc != EMCODER_ERR_CANCELLED || !err || !emcoder_error_message(err)[0])
                fail("a stopped call did not return EMCODER_ERR_CANCELLED", tid, c, idx[0]);
            break;
        }
        case 2: { /* a model of its own: load, predict, free */
            EmcoderModelParams mp = emcoder_model_default_params();
            mp.n_threads = 1 + (uint32_t)(next(&rng) % 2);
            EmcoderModel *m = NULL;
            rc = emcoder_model_load(model_dir, &mp, &m, &err);
            if (rc != EMCODER_OK) {
                fail(emcoder_error_message(err), tid, c, -1);
                break;
            }
            rc = predict_some(m, idx, n, &o, &p, &err);
            if (rc != EMCODER_OK) fail(emcoder_error_message(err), tid, c, idx[0]);
            else compare(p, idx, n, c, tid);
            /* Free the model first: the prediction does not depend on it. */
            emcoder_model_free(m);
            break;
        }
        case 3: { /* invalid UTF-8 among valid texts */
            EmcoderText t[3] = {{TEXTS[0], strlen(TEXTS[0])}, {"ab\xff\xfe", 4}, {"ok", 2}};
            rc = emcoder_predict_texts(shared, t, 3, &o, &p, &err);
            if (rc != EMCODER_ERR_INVALID_UTF8 || !err || !strstr(emcoder_error_message(err), "1"))
                fail("invalid UTF-8 was not EMCODER_ERR_INVALID_UTF8 naming text 1", tid, c, 1);
            break;
        }
        case 4: /* fail fast on memory: done, or refused at once while others hold the budget */
            o.fail_fast_on_memory = 1;
            rc = predict_some(shared, idx, n, &o, &p, &err);
            if (rc == EMCODER_OK) compare(p, idx, n, c, tid);
            else if (rc != EMCODER_ERR_OUT_OF_MEMORY)
                fail("fail-fast call failed with another code than OUT_OF_MEMORY", tid, c, idx[0]);
            break;
        default: /* accessors out of range and NULLs, from every thread */
            rc = predict_some(shared, idx, 1, &o, &p, &err);
            if (rc != EMCODER_OK) fail(emcoder_error_message(err), tid, c, idx[0]);
            else if (emcoder_prediction_labels(p, 1) || emcoder_prediction_logits(p, 5) ||
                     emcoder_model_label(shared, NL) || emcoder_prediction_n_tokens(p, 9))
                fail("an out-of-range accessor returned data", tid, c, idx[0]);
            break;
        }
        emcoder_prediction_free(p);
        emcoder_error_free(err);
        atomic_fetch_add(&ops_by_kind[kind], 1);
        atomic_fetch_add(&progress[tid], 1);
    }
    return NULL;
}

static void *watchdog(void *arg) {
    (void)arg;
    long last[64] = {0};
    double since[64];
    for (int t = 0; t < n_threads; t++) since[t] = now();
    while (!atomic_load(&stop_all)) {
        sleep(1);
        for (int t = 0; t < n_threads; t++) {
            long p = atomic_load(&progress[t]);
            if (p != last[t]) {
                last[t] = p;
                since[t] = now();
            } else if (now() - since[t] > 120 && now() < deadline + 120) {
                fprintf(stderr, "soak: thread %d finished no call for 120 s: hung\n", t);
                fflush(stderr);
                _exit(3);
            }
        }
    }
    return NULL;
}

/* Runs the workers for `seconds`; samples the resident set every second into *peak (from
 * this thread) while they run. */
static void run_threads(double seconds, double *peak) {
    pthread_t th[64];
    deadline = now() + seconds;
    for (int t = 0; t < n_threads; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) != 0) {
            perror("pthread_create");
            exit(2);
        }
    while (now() < deadline) {
        sleep(1);
        double r = rss_mb();
        if (r > *peak) *peak = r;
    }
    for (int t = 0; t < n_threads; t++) pthread_join(th[t], NULL);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR SECONDS [THREADS]\n", argv[0]);
        return 2;
    }
    model_dir = argv[1];
    double seconds = atof(argv[2]);
    n_threads = argc > 3 ? atoi(argv[3]) : 8;
    if (n_threads < 1 || n_threads > 64 || seconds <= 0) {
        fprintf(stderr, "soak: THREADS must be 1..64 and SECONDS > 0\n");
        return 2;
    }
    EmcoderError *err = NULL;
    EmcoderModelParams mp = emcoder_model_default_params();
    mp.n_threads = 2;
    CHECK_ERR(emcoder_model_load(model_dir, &mp, &shared, &err), EMCODER_OK, err);
    if (!shared) return 1;

    /* The serial reference: each text alone, each config. */
    for (int c = 0; c < N_CONFIGS; c++)
        for (int i = 0; i < N_TEXTS; i++) {
            EmcoderPredictOptions o = options_of(c);
            EmcoderPrediction *p = NULL;
            CHECK_ERR(emcoder_predict(shared, &TEXTS[i], 1, &o, &p, &err), EMCODER_OK, err);
            if (!p) return 1;
            memcpy(ref_stats[c][i], emcoder_prediction_labels(p, 0), sizeof ref_stats[c][i]);
            ref_samples[c][i] = emcoder_prediction_n_samples(p, 0);
            emcoder_prediction_free(p);
        }

    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    /* Warm-up round: every thread's allocator arenas and the model's arenas exist after it. */
    double warm = seconds < 20 ? seconds / 4 : 5;
    double warm_peak = 0;
    run_threads(warm, &warm_peak);
    malloc_trim(0);
    double base = rss_mb();
    double t0 = now(), peak = base;
    /* The run proper. */
    run_threads(seconds, &peak);
    atomic_store(&stop_all, 1);
    pthread_join(wd, NULL);
    malloc_trim(0);
    double end = rss_mb();
    long total = 0;
    for (int k = 0; k < 6; k++) total += atomic_load(&ops_by_kind[k]);
    printf("soak: %d threads, %.0f s, %ld calls (", n_threads, now() - t0, total);
    for (int k = 0; k < 6; k++)
        printf("%s%s %ld", k ? ", " : "", KIND_NAMES[k], atomic_load(&ops_by_kind[k]));
    printf("); resident set: %.1f MB after warm-up, %.1f MB peak, %.1f MB at the end\n", base,
           peak, end);
    CHECK(end <= base + 64.0);
    for (int k = 0; k < 6; k++) CHECK(atomic_load(&ops_by_kind[k]) > 0);
    emcoder_model_free(shared);
    printf("soak: %d checks, %d failures\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
