/*
 * The C test of libemcoder, linked once against libemcoder.so and once against libemcoder.a
 * (scripts/test-bindings.sh), and run under valgrind.
 *
 * Usage: test_emcoder <model_dir> <expected_file>
 *   model_dir      the fixture model (tests/fixtures/tiny-vocab-bf16)
 *   expected_file  values computed by the Rust API (ffi/examples/expected_values.rs)
 *
 * Checks: ABI/version and defaults (struct_size, the init functions); every error path (NULL
 * pointers, invalid UTF-8, bad and missing directories, bad params, n_texts 0, out-of-range
 * indexes, out of memory, a panic inside the library); the load parameters of ABI 2 (isa,
 * copy_weights, refuse_non_finite, a zero-initialized struct); the predictions of every
 * expected case against the Rust API, through emcoder_predict and through
 * emcoder_predict_texts (texts as pointer and length, no terminators), the samples each text
 * drew included; stopping on decisions (ABI 3's decision_error: early stops, the texts that
 * never settle equal the fixed-N run, the invalid values); batch invariance;
 * concurrent predictions from several threads on one model; ownership (a prediction outlives
 * its model). Exit status 0 when every check passes. (Cancellation, memory limits, fork and the
 * log callback: tests/c/test_limits.c.)
 */
#define _POSIX_C_SOURCE 200809L /* getline, strdup, mkdtemp */
#include "check.h"
#include "emcoder.h"

#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The layouts the bindings hard-code (ffi/src/lib.rs tests the same on the Rust side). */
_Static_assert(sizeof(EmcoderModelParams) == 72, "EmcoderModelParams layout");
_Static_assert(offsetof(EmcoderModelParams, device_index) == 64, "ABI 4 field past the ABI 2 bytes");
_Static_assert(sizeof(EmcoderPredictOptions) == 56, "EmcoderPredictOptions layout");
/* ABI 3's field starts after the whole ABI 2 struct (48 bytes), not in its tail padding. */
_Static_assert(offsetof(EmcoderPredictOptions, decision_error) == 48, "decision_error offset");
_Static_assert(sizeof(EmcoderLabelStats) == 24, "EmcoderLabelStats layout");
_Static_assert(sizeof(EmcoderText) == 16, "EmcoderText layout");

CHECK_COUNTERS;

/* ---- The expected values (format in ffi/examples/expected_values.rs) ---- */

#define MAX_CASES 8

typedef struct {
    uint32_t n_samples;
    uint64_t seed;
    double decision_error; /* 0: off */
    size_t n_texts;
    char **texts;
    size_t *n_tokens;
    uint32_t *drawn;          /* the samples each text drew */
    EmcoderLabelStats *stats; /* (n_texts, num_labels) */
    float *logits;            /* (n_texts, num_labels), deterministic cases only */
} Case;

typedef struct {
    size_t num_labels;
    char **labels;
    size_t n_cases;
    Case cases[MAX_CASES];
} Expected;

static char *unhex(const char *hex) {
    size_t n = strlen(hex) / 2;
    char *s = xcalloc(n + 1, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        s[i] = (char)v;
    }
    return s;
}

static void parse_fail(const char *why) {
    fprintf(stderr, "bad expected file: %s\n", why);
    exit(2);
}

static void read_expected(const char *path, Expected *ex) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        exit(2);
    }
    char *line = NULL;
    size_t cap = 0;
    size_t nl = 0, text = 0, label = 0, stat = 0;
    Case *c = NULL;
    memset(ex, 0, sizeof *ex);
    while (getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "labels ", 7) == 0) {
            ex->num_labels = nl = strtoul(line + 7, NULL, 10);
            ex->labels = xcalloc(nl, sizeof(char *));
        } else if (strncmp(line, "label ", 6) == 0) {
            if (label >= nl) parse_fail("too many labels");
            ex->labels[label++] = strdup(line + 6);
        } else if (strncmp(line, "case ", 5) == 0) {
            if (ex->n_cases == MAX_CASES) parse_fail("too many cases");
            c = &ex->cases[ex->n_cases++];
            unsigned long long seed;
            if (sscanf(line + 5, "%u %llu %zu %lf", &c->n_samples, &seed, &c->n_texts,
                       &c->decision_error) != 4)
                parse_fail(line);
            c->seed = seed;
            c->texts = xcalloc(c->n_texts, sizeof(char *));
            c->n_tokens = xcalloc(c->n_texts, sizeof(size_t));
            c->drawn = xcalloc(c->n_texts, sizeof(uint32_t));
            c->stats = xcalloc(c->n_texts * nl, sizeof(EmcoderLabelStats));
            c->logits = c->n_samples == 0 ? xcalloc(c->n_texts * nl, sizeof(float)) : NULL;
            text = 0;
            stat = 0;
        } else if (strncmp(line, "text ", 5) == 0) {
            if (!c || text >= c->n_texts) parse_fail("text outside a case");
            char *rest = NULL, *hex = NULL;
            c->n_tokens[text] = strtoul(line + 5, &rest, 10);
            c->drawn[text] = (uint32_t)strtoul(rest, &hex, 10);
            if (*hex != ' ') parse_fail(line);
            c->texts[text++] = unhex(hex + 1);
        } else if (strncmp(line, "stat ", 5) == 0) {
            if (!c || stat >= text * nl) parse_fail("stat outside a text");
            EmcoderLabelStats *s = &c->stats[stat++];
            unsigned predicted;
            if (sscanf(line + 5, "%f %f %f %f %f %u", &s->mean, &s->std, &s->total_entropy,
                       &s->aleatoric, &s->epistemic, &predicted) != 6)
                parse_fail(line);
            s->predicted = (uint8_t)predicted;
        } else if (strncmp(line, "logits ", 7) == 0) {
            if (!c || !c->logits || text == 0) parse_fail("logits outside a deterministic text");
            char *p = line + 7;
            for (size_t i = 0; i < nl; i++) c->logits[(text - 1) * nl + i] = strtof(p, &p);
        }
    }
    free(line);
    fclose(f);
    if (nl == 0 || ex->n_cases == 0) parse_fail("no labels or no cases");
}

static void free_expected(Expected *ex) {
    for (size_t i = 0; i < ex->num_labels; i++) free(ex->labels[i]);
    free(ex->labels);
    for (size_t k = 0; k < ex->n_cases; k++) {
        Case *c = &ex->cases[k];
        for (size_t i = 0; i < c->n_texts; i++) free(c->texts[i]);
        free(c->texts);
        free(c->n_tokens);
        free(c->drawn);
        free(c->stats);
        free(c->logits);
    }
}

/* ---- Comparisons ---- */

/* Both sides run the same code; only a different summation order could move a last bit. */
static const float TOL = 1e-6f;
static _Thread_local float max_diff = 0.0f; /* per thread: workers must not race on it */

static int close_to(float got, float want) {
    float d = fabsf(got - want);
    if (d > max_diff) max_diff = d;
    return d <= TOL;
}

static int stats_equal(const EmcoderLabelStats *a, const EmcoderLabelStats *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int ok = close_to(a[i].mean, b[i].mean) & close_to(a[i].std, b[i].std) &
                 close_to(a[i].total_entropy, b[i].total_entropy) &
                 close_to(a[i].aleatoric, b[i].aleatoric) &
                 close_to(a[i].epistemic, b[i].epistemic) && a[i].predicted == b[i].predicted;
        if (!ok) {
            fprintf(stderr, "  label %zu: got mean %.9g std %.9g predicted %u, want %.9g %.9g %u\n",
                    i, a[i].mean, a[i].std, a[i].predicted, b[i].mean, b[i].std, b[i].predicted);
            return 0;
        }
    }
    return 1;
}

static EmcoderPredictOptions case_options(const Case *c) {
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.n_samples = c->n_samples;
    o.seed = c->seed;
    o.decision_error = c->decision_error;
    return o;
}

/* Predicts a case and compares every number with the Rust API; returns 1 when all agree.
 * `sized`: through emcoder_predict_texts, each text a (pointer, length) pair into one buffer
 * without terminators, instead of emcoder_predict. */
static int run_case_with(const EmcoderModel *m, const Case *c, size_t nl, int sized) {
    EmcoderPredictOptions o = case_options(c);
    EmcoderPrediction *p = NULL;
    EmcoderError *err = NULL;
    int32_t code;
    if (sized) {
        size_t total = 0;
        for (size_t i = 0; i < c->n_texts; i++) total += strlen(c->texts[i]);
        char *buf = xcalloc(total, 1); /* the texts back to back, no NUL between them */
        EmcoderText *t = xcalloc(c->n_texts, sizeof(EmcoderText));
        for (size_t i = 0, at = 0; i < c->n_texts; i++) {
            t[i].len = strlen(c->texts[i]);
            t[i].data = memcpy(buf + at, c->texts[i], t[i].len);
            at += t[i].len;
        }
        code = emcoder_predict_texts(m, t, c->n_texts, &o, &p, &err);
        free(t);
        free(buf);
    } else {
        code = emcoder_predict(m, (const char *const *)c->texts, c->n_texts, &o, &p, &err);
    }
    if (code != EMCODER_OK) {
        fprintf(stderr, "predict failed: %s\n", emcoder_error_message(err));
        emcoder_error_free(err);
        return 0;
    }
    int ok = err == NULL && emcoder_prediction_num_texts(p) == c->n_texts &&
             emcoder_prediction_num_labels(p) == nl;
    for (size_t i = 0; i < c->n_texts; i++) {
        ok &= emcoder_prediction_n_tokens(p, i) == c->n_tokens[i];
        ok &= emcoder_prediction_n_samples(p, i) == c->drawn[i];
        ok &= c->drawn[i] <= c->n_samples;
        const EmcoderLabelStats *s = emcoder_prediction_labels(p, i);
        ok &= s != NULL && stats_equal(s, &c->stats[i * nl], nl);
        const float *z = emcoder_prediction_logits(p, i);
        if (c->logits) {
            ok &= z != NULL;
            for (size_t j = 0; z && j < nl; j++) ok &= close_to(z[j], c->logits[i * nl + j]);
        } else {
            ok &= z == NULL;
        }
    }
    ok &= emcoder_prediction_labels(p, c->n_texts) == NULL;
    ok &= emcoder_prediction_logits(p, c->n_texts) == NULL;
    ok &= emcoder_prediction_n_tokens(p, c->n_texts) == 0;
    ok &= emcoder_prediction_n_samples(p, c->n_texts) == 0;
    ok &= emcoder_prediction_labels(p, SIZE_MAX) == NULL;
    emcoder_prediction_free(p);
    return ok;
}

static int run_case(const EmcoderModel *m, const Case *c, size_t nl) {
    return run_case_with(m, c, nl, 0);
}

/* ---- Tests ---- */

static void test_version_and_defaults(void) {
    CHECK(emcoder_abi_version() >= EMCODER_ABI_VERSION && EMCODER_ABI_VERSION == 5);
    CHECK(emcoder_version() != NULL && strlen(emcoder_version()) > 0);
    EmcoderModelParams mp = emcoder_model_default_params();
    CHECK(mp.struct_size == sizeof mp);
    CHECK(mp.tokenizer_path == NULL && mp.n_threads == 0 && mp.device == EMCODER_DEVICE_CPU);
    CHECK(mp.max_tokens == 4096 && mp.max_rows > 0);
    CHECK(mp.memory_budget == 0 && mp.isa == NULL && mp.copy_weights == 0 &&
          mp.refuse_non_finite == 0 && mp.device_index == 0);
    EmcoderPredictOptions po = emcoder_predict_default_options();
    CHECK(po.struct_size == sizeof po);
    CHECK(po.n_samples == EMCODER_DEFAULT_SAMPLES && po.n_samples == 50);
    CHECK(po.seed == EMCODER_DEFAULT_SEED && po.truncate == 0);
    CHECK(po.cancel == NULL && po.timeout_ms == 0 && po.fail_fast_on_memory == 0);
    CHECK(po.tolerance == 0.0f && po.decision_error == 0.0);
    /* The init functions write nothing past the size they are given. */
    EmcoderPredictOptions part;
    memset(&part, 0xAB, sizeof part);
    emcoder_predict_options_init(&part, 8);
    CHECK(part.struct_size == 8 && part.n_samples == 50 && part.seed == 0xABABABABABABABABull);
    /* The ABI 2 size: every ABI 2 field, not decision_error. */
    unsigned char abab[sizeof(double)];
    memset(abab, 0xAB, sizeof abab);
    emcoder_predict_options_init(&part, 48);
    CHECK(part.struct_size == 48 && part.seed == 42 && part.fail_fast_on_memory == 0);
    CHECK(memcmp(&part.decision_error, abab, sizeof abab) == 0);
    emcoder_predict_options_init(NULL, sizeof part);
    CHECK(strcmp(emcoder_error_code_name(EMCODER_ERR_IO), "EMCODER_ERR_IO") == 0);
    CHECK(strcmp(emcoder_error_code_name(EMCODER_ERR_CANCELLED), "EMCODER_ERR_CANCELLED") == 0);
    CHECK(EMCODER_ERR_CANCELLED == -7 && EMCODER_ERR_OUT_OF_MEMORY == -5);
    CHECK(EMCODER_ERR_DEVICE == -8 &&
          strcmp(emcoder_error_code_name(EMCODER_ERR_DEVICE), "EMCODER_ERR_DEVICE") == 0);
    CHECK(strcmp(emcoder_error_code_name(EMCODER_OK), "EMCODER_OK") == 0);
    CHECK(strcmp(emcoder_error_code_name(-1000), "EMCODER_ERR_UNKNOWN") == 0);
}

static void test_null_handles(void) {
    emcoder_model_free(NULL);
    emcoder_prediction_free(NULL);
    emcoder_error_free(NULL);
    CHECK(emcoder_model_num_labels(NULL) == 0);
    CHECK(emcoder_model_label(NULL, 0) == NULL);
    CHECK(emcoder_model_n_threads(NULL) == 0);
    CHECK(emcoder_prediction_num_texts(NULL) == 0);
    CHECK(emcoder_prediction_num_labels(NULL) == 0);
    CHECK(emcoder_prediction_n_samples(NULL, 0) == 0);
    CHECK(emcoder_prediction_n_tokens(NULL, 0) == 0);
    CHECK(emcoder_prediction_labels(NULL, 0) == NULL);
    CHECK(emcoder_prediction_logits(NULL, 0) == NULL);
    CHECK(emcoder_model_scratch_bound(NULL) == 0 && emcoder_model_memory_budget(NULL) == 0);
    CHECK(emcoder_model_isa(NULL) == NULL);
    CHECK(emcoder_error_code(NULL) == EMCODER_OK);
    CHECK(emcoder_error_message(NULL) != NULL && emcoder_error_message(NULL)[0] == '\0');
}

static void test_panic_guard(void) {
    fprintf(stderr, "test_panic_guard: the next two panic messages on stderr are expected\n");
    EmcoderError *err = NULL;
    int32_t code = emcoder_debug_panic(&err);
    CHECK(code == EMCODER_ERR_INTERNAL && emcoder_error_code(err) == EMCODER_ERR_INTERNAL);
    CHECK(strstr(emcoder_error_message(err), "deliberate panic") != NULL);
    emcoder_error_free(err);
    CHECK(emcoder_debug_panic(NULL) == EMCODER_ERR_INTERNAL);
    /* The library is still usable after a panic. */
    CHECK(emcoder_abi_version() == EMCODER_ABI_VERSION);
}

/* A directory whose config.json is not JSON: EMCODER_ERR_BAD_MODEL. */
static void make_bad_model_dir(char *dir) {
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(2);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{ this is not json", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    f = fopen(path, "w");
    fputs("garbage", f);
    fclose(f);
}

static void remove_bad_model_dir(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

static void test_load_errors(const char *model_dir) {
    EmcoderModel *m = (EmcoderModel *)&m; /* not NULL: the call must reset it */
    EmcoderError *err = NULL;

    CHECK_ERR(emcoder_model_load(NULL, NULL, &m, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK(m == NULL);
    CHECK_ERR(emcoder_model_load(model_dir, NULL, NULL, &err), EMCODER_ERR_INVALID_ARGUMENT, err);

    err = NULL;
    m = (EmcoderModel *)&m;
    int32_t code = emcoder_model_load("/nonexistent/emcoder-model", NULL, &m, &err);
    CHECK(m == NULL);
    CHECK(err && strstr(emcoder_error_message(err), "/nonexistent/emcoder-model") != NULL);
    CHECK_ERR(code, EMCODER_ERR_IO, err);
    /* err may be NULL: the code still tells what happened. */
    CHECK(emcoder_model_load("/nonexistent/emcoder-model", NULL, &m, NULL) == EMCODER_ERR_IO);
    CHECK(m == NULL);

    char bad[] = "/tmp/emcoder-bad-model-XXXXXX";
    make_bad_model_dir(bad);
    CHECK_ERR(emcoder_model_load(bad, NULL, &m, &err), EMCODER_ERR_BAD_MODEL, err);
    CHECK(m == NULL);
    remove_bad_model_dir(bad);

    /* A GPU this library cannot use (no CUDA backend in this build, or no driver): a device
     * error that says so; an unknown device or a GPU index for the CPU: invalid arguments. */
    EmcoderModelParams p = emcoder_model_default_params();
    p.device = EMCODER_DEVICE_CUDA;
    err = NULL;
    code = emcoder_model_load(model_dir, &p, &m, &err);
    if (code == EMCODER_OK) {
        emcoder_model_free(m); /* a GPU is usable here */
        m = NULL;
    } else {
        CHECK(err && strstr(emcoder_error_message(err), "CUDA") != NULL);
        CHECK_ERR(code, EMCODER_ERR_DEVICE, err);
        CHECK(m == NULL);
    }
    p = emcoder_model_default_params();
    p.device = 7;
    CHECK_ERR(emcoder_model_load(model_dir, &p, &m, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    p = emcoder_model_default_params();
    p.device_index = 1;
    CHECK_ERR(emcoder_model_load(model_dir, &p, &m, &err), EMCODER_ERR_INVALID_ARGUMENT, err);

    p = emcoder_model_default_params();
    CHECK(p.precision == EMCODER_PRECISION_F32);
    CHECK(EMCODER_PRECISION_F32 == 0 && EMCODER_PRECISION_BF16 == 1 && EMCODER_PRECISION_INT8 == 2);
    p.precision = 7;
    CHECK_ERR(emcoder_model_load(model_dir, &p, &m, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK(m == NULL);
    /* The first value past INT8: an invalid argument whose message lists the valid ones. */
    p.precision = 3;
    err = NULL;
    code = emcoder_model_load(model_dir, &p, &m, &err);
    CHECK(err && strstr(emcoder_error_message(err), "precision 3 is unknown") != NULL);
    CHECK(err && strstr(emcoder_error_message(err), "EMCODER_PRECISION_INT8 (2)") != NULL);
    CHECK_ERR(code, EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK(m == NULL);
    /* int8 is CPU only: with a GPU the load is a device error (int8 on a GPU, or no CUDA). */
    p = emcoder_model_default_params();
    p.precision = EMCODER_PRECISION_INT8;
    p.device = EMCODER_DEVICE_CUDA;
    err = NULL;
    code = emcoder_model_load(model_dir, &p, &m, &err);
    CHECK(err && (strstr(emcoder_error_message(err), "int8") != NULL ||
                  strstr(emcoder_error_message(err), "CUDA") != NULL));
    CHECK_ERR(code, EMCODER_ERR_DEVICE, err);
    CHECK(m == NULL);

    /* bf16 precision loads and predicts means within 0.01 of f32. */
    p = emcoder_model_default_params();
    p.precision = EMCODER_PRECISION_BF16;
    EmcoderModel *bf = NULL, *f32m = NULL;
    CHECK(emcoder_model_load(model_dir, &p, &bf, NULL) == EMCODER_OK);
    CHECK(emcoder_model_load(model_dir, NULL, &f32m, NULL) == EMCODER_OK);
    {
        const char *t[] = {"I am so happy you are here!"};
        EmcoderPrediction *a = NULL, *b = NULL;
        CHECK(emcoder_predict(f32m, t, 1, NULL, &a, NULL) == EMCODER_OK);
        CHECK(emcoder_predict(bf, t, 1, NULL, &b, NULL) == EMCODER_OK);
        const EmcoderLabelStats *sa = emcoder_prediction_labels(a, 0), *sb = emcoder_prediction_labels(b, 0);
        float worst = 0;
        for (size_t i = 0; sa && sb && i < emcoder_model_num_labels(f32m); i++) {
            float d = sa[i].mean > sb[i].mean ? sa[i].mean - sb[i].mean : sb[i].mean - sa[i].mean;
            if (d > worst) worst = d;
        }
        CHECK(sa && sb && worst <= 0.01f);
        emcoder_prediction_free(a);
        emcoder_prediction_free(b);

        /* Adaptive sampling: a loose tolerance stops after the first block of 10 samples. */
        EmcoderPredictOptions o = emcoder_predict_default_options();
        CHECK(o.tolerance == 0.0f);
        o.tolerance = 1.0f;
        CHECK(emcoder_predict(f32m, t, 1, &o, &a, NULL) == EMCODER_OK);
        CHECK(emcoder_prediction_n_samples(a, 0) == 10);
        emcoder_prediction_free(a);
        o.tolerance = -1.0f;
        CHECK_ERR(emcoder_predict(f32m, t, 1, &o, &a, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    }
    emcoder_model_free(bf);

    /* int8 precision loads and predicts means within 0.02 of f32 (the quantization error of
     * this tiny random fixture), and they are its own numbers, not f32's. */
    p = emcoder_model_default_params();
    p.precision = EMCODER_PRECISION_INT8;
    EmcoderModel *q8 = NULL;
    err = NULL;
    CHECK_ERR(emcoder_model_load(model_dir, &p, &q8, &err), EMCODER_OK, err);
    if (q8) {
        const char *t[] = {"I am so happy you are here!", "This is the worst day ever."};
        EmcoderPrediction *a = NULL, *b = NULL;
        CHECK(emcoder_predict(f32m, t, 2, NULL, &a, NULL) == EMCODER_OK);
        CHECK(emcoder_predict(q8, t, 2, NULL, &b, NULL) == EMCODER_OK);
        CHECK(emcoder_prediction_num_texts(b) == 2 && emcoder_prediction_n_samples(b, 1) == 50);
        float worst = 0;
        for (size_t k = 0; a && b && k < 2; k++) {
            const EmcoderLabelStats *sa = emcoder_prediction_labels(a, k);
            const EmcoderLabelStats *sb = emcoder_prediction_labels(b, k);
            for (size_t i = 0; sa && sb && i < emcoder_model_num_labels(f32m); i++) {
                float d = sa[i].mean > sb[i].mean ? sa[i].mean - sb[i].mean : sb[i].mean - sa[i].mean;
                if (d > worst) worst = d;
            }
        }
        CHECK(a && b && worst > 0.0f && worst <= 0.02f);
        emcoder_prediction_free(a);
        emcoder_prediction_free(b);
    }
    emcoder_model_free(q8);
    emcoder_model_free(f32m);

    p = emcoder_model_default_params();
    p.tokenizer_path = "/nonexistent/tokenizer.json";
    CHECK_ERR(emcoder_model_load(model_dir, &p, &m, &err), EMCODER_ERR_IO, err);
    CHECK(m == NULL);
}

static void test_labels(const EmcoderModel *m, const Expected *ex) {
    CHECK(emcoder_model_num_labels(m) == ex->num_labels);
    for (size_t i = 0; i < ex->num_labels; i++) {
        const char *l = emcoder_model_label(m, i);
        CHECK(l != NULL && strcmp(l, ex->labels[i]) == 0);
    }
    CHECK(emcoder_model_label(m, ex->num_labels) == NULL);
    CHECK(emcoder_model_label(m, SIZE_MAX) == NULL);
    CHECK(emcoder_model_n_threads(m) == 2);
}

static void test_predict_errors(const EmcoderModel *m) {
    const char *texts[] = {"fine", NULL};
    EmcoderPrediction *p = (EmcoderPrediction *)&p;
    EmcoderError *err = NULL;

    CHECK_ERR(emcoder_predict(NULL, texts, 1, NULL, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK(p == NULL);
    CHECK_ERR(emcoder_predict(m, NULL, 1, NULL, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK_ERR(emcoder_predict(m, texts, 0, NULL, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK_ERR(emcoder_predict(m, texts, 2, NULL, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK_ERR(emcoder_predict(m, texts, 1, NULL, NULL, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK(emcoder_predict(m, texts, 0, NULL, &p, NULL) == EMCODER_ERR_INVALID_ARGUMENT);
    CHECK(p == NULL);

    /* Invalid UTF-8: a lone continuation byte, a truncated sequence, an overlong encoding. */
    const char *bad_utf8[] = {"ok", "bad \x80 byte", "caf\xc3", "\xc0\xaf"};
    for (size_t i = 1; i < 4; i++) {
        const char *pair[] = {bad_utf8[0], bad_utf8[i]};
        err = NULL;
        int32_t code = emcoder_predict(m, pair, 2, NULL, &p, &err);
        CHECK(err && strstr(emcoder_error_message(err), "texts[1]") != NULL);
        CHECK_ERR(code, EMCODER_ERR_INVALID_UTF8, err);
        CHECK(p == NULL);
    }

    /* Longer than max_tokens (4096): an error, unless truncating. */
    size_t words = 5000;
    char *long_text = xcalloc(words * 2 + 1, 1);
    for (size_t i = 0; i < words; i++) memcpy(long_text + 2 * i, "a ", 2);
    const char *one[] = {long_text};
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.n_samples = 0;
    err = NULL;
    int32_t code = emcoder_predict(m, one, 1, &o, &p, &err);
    CHECK(err && strstr(emcoder_error_message(err), "4096") != NULL);
    CHECK_ERR(code, EMCODER_ERR_INVALID_ARGUMENT, err);
    o.truncate = 1;
    CHECK_ERR(emcoder_predict(m, one, 1, &o, &p, &err), EMCODER_OK, err);
    CHECK(emcoder_prediction_n_tokens(p, 0) == 4096);
    emcoder_prediction_free(p);
    free(long_text);

    /* Out of memory: the logits of 2000 texts x 2^32-1 samples (~870 TiB) cannot exist. */
    size_t n_many = 2000;
    const char **many = xcalloc(n_many, sizeof(char *));
    for (size_t i = 0; i < n_many; i++) many[i] = "ok";
    o = emcoder_predict_default_options();
    o.n_samples = UINT32_MAX;
    CHECK_ERR(emcoder_predict(m, many, n_many, &o, &p, &err), EMCODER_ERR_OUT_OF_MEMORY, err);
    CHECK(p == NULL);
    free(many);

    /* NULL options: the defaults (50 samples). */
    CHECK_ERR(emcoder_predict(m, texts, 1, NULL, &p, &err), EMCODER_OK, err);
    CHECK(emcoder_prediction_n_samples(p, 0) == EMCODER_DEFAULT_SAMPLES);
    CHECK(emcoder_prediction_logits(p, 0) == NULL);
    emcoder_prediction_free(p);
}

/* Stopping on decisions (decision_error, ABI 3), beyond the expected case's numbers (which
 * run_case checks): some texts stop early, those that never settle equal the fixed-N run, and
 * the invalid values are refused. */
static void test_decision_error(const EmcoderModel *m, const Expected *ex) {
    const Case *c = NULL;
    for (size_t k = 0; k < ex->n_cases; k++)
        if (ex->cases[k].decision_error != 0.0) c = &ex->cases[k];
    CHECK(c != NULL && c->n_samples == 50 && c->decision_error == 0.01);
    if (!c) return;
    size_t nl = ex->num_labels;
    EmcoderPredictOptions o = case_options(c);
    EmcoderPredictOptions fixed = o;
    fixed.decision_error = 0.0;
    EmcoderPrediction *p = NULL, *f = NULL;
    EmcoderError *err = NULL;
    CHECK_ERR(emcoder_predict(m, (const char *const *)c->texts, c->n_texts, &o, &p, &err),
              EMCODER_OK, err);
    CHECK_ERR(emcoder_predict(m, (const char *const *)c->texts, c->n_texts, &fixed, &f, &err),
              EMCODER_OK, err);
    size_t early = 0, all = 0;
    for (size_t i = 0; p && f && i < c->n_texts; i++) {
        uint32_t n = emcoder_prediction_n_samples(p, i);
        CHECK(n >= 10 && n <= c->n_samples && n % 10 == 0);
        CHECK(emcoder_prediction_n_samples(f, i) == c->n_samples);
        if (n < c->n_samples) {
            early++;
        } else {
            /* Never settled: the samples of the fixed-N run, so its numbers. */
            all++;
            CHECK(stats_equal(emcoder_prediction_labels(p, i), emcoder_prediction_labels(f, i),
                              nl));
        }
    }
    /* The expected case has both kinds (ffi/examples/expected_values.rs chose its texts). */
    CHECK(early > 0 && all > 0);
    emcoder_prediction_free(p);
    emcoder_prediction_free(f);

    /* Invalid values: negative, 1 and more, NaN, infinite; and both stopping rules at once. */
    const char *t[] = {"ok"};
    const double bad[] = {-0.01, 1.0, 1.5, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = emcoder_predict_default_options();
        o.decision_error = bad[i];
        p = (EmcoderPrediction *)&p;
        err = NULL;
        int32_t code = emcoder_predict(m, t, 1, &o, &p, &err);
        CHECK(p == NULL);
        CHECK(err && strstr(emcoder_error_message(err), "decision_error") != NULL &&
              strstr(emcoder_error_message(err), "between 0 and 1") != NULL);
        CHECK_ERR(code, EMCODER_ERR_INVALID_ARGUMENT, err);
    }
    o = emcoder_predict_default_options();
    o.decision_error = 0.01;
    o.tolerance = 0.05f;
    err = NULL;
    int32_t code = emcoder_predict(m, t, 1, &o, &p, &err);
    CHECK(err && strstr(emcoder_error_message(err), "set one of them") != NULL);
    CHECK_ERR(code, EMCODER_ERR_INVALID_ARGUMENT, err);
    /* 0 is off: the tolerance alone still works. */
    o.decision_error = 0.0;
    o.tolerance = 1.0f;
    CHECK_ERR(emcoder_predict(m, t, 1, &o, &p, &err), EMCODER_OK, err);
    CHECK(emcoder_prediction_n_samples(p, 0) == 10);
    emcoder_prediction_free(p);
}

/* Each text alone gives the same numbers as in the batch. */
static void test_batch_invariance(const EmcoderModel *m, const Case *c, size_t nl) {
    EmcoderPredictOptions o = case_options(c);
    for (size_t i = 0; i < c->n_texts; i++) {
        EmcoderPrediction *p = NULL;
        const char *one[] = {c->texts[i]};
        CHECK(emcoder_predict(m, one, 1, &o, &p, NULL) == EMCODER_OK);
        const EmcoderLabelStats *s = emcoder_prediction_labels(p, 0);
        CHECK(s && stats_equal(s, &c->stats[i * nl], nl));
        CHECK(emcoder_prediction_n_samples(p, 0) == c->drawn[i]);
        emcoder_prediction_free(p);
    }
}

/* Texts as (pointer, length): no terminator needed; empty texts; the errors. */
static void test_sized_texts(const EmcoderModel *m) {
    EmcoderPredictOptions o = emcoder_predict_default_options();
    o.n_samples = 0;
    EmcoderPrediction *p = NULL, *q = NULL;
    EmcoderError *err = NULL;
    /* "happy" inside a larger buffer, no NUL after it; an empty text with a NULL pointer. */
    const char buf[] = "so happy!!";
    EmcoderText t[2] = {{buf + 3, 5}, {NULL, 0}};
    CHECK_ERR(emcoder_predict_texts(m, t, 2, &o, &p, &err), EMCODER_OK, err);
    const char *plain[] = {"happy", ""};
    CHECK_ERR(emcoder_predict(m, plain, 2, &o, &q, &err), EMCODER_OK, err);
    for (size_t i = 0; i < 2; i++) {
        CHECK(emcoder_prediction_n_tokens(p, i) == emcoder_prediction_n_tokens(q, i));
        const float *a = emcoder_prediction_logits(p, i), *b = emcoder_prediction_logits(q, i);
        CHECK(a && b && memcmp(a, b, emcoder_model_num_labels(m) * sizeof(float)) == 0);
    }
    CHECK(emcoder_prediction_n_tokens(p, 1) == 2); /* [CLS] [SEP] */
    emcoder_prediction_free(p);
    emcoder_prediction_free(q);

    /* A NUL byte inside a text, a NULL pointer with a length, invalid UTF-8, NULL arguments. */
    EmcoderText nul[2] = {{"ok", 2}, {"a\0b", 3}};
    err = NULL;
    int32_t code = emcoder_predict_texts(m, nul, 2, &o, &p, &err);
    CHECK(err && strstr(emcoder_error_message(err), "texts[1]") != NULL);
    CHECK_ERR(code, EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK(p == NULL);
    EmcoderText null_data = {NULL, 4};
    CHECK_ERR(emcoder_predict_texts(m, &null_data, 1, &o, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    EmcoderText bad = {"caf\xc3", 4};
    CHECK_ERR(emcoder_predict_texts(m, &bad, 1, &o, &p, &err), EMCODER_ERR_INVALID_UTF8, err);
    CHECK_ERR(emcoder_predict_texts(m, NULL, 1, &o, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK_ERR(emcoder_predict_texts(m, t, 0, &o, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK_ERR(emcoder_predict_texts(NULL, t, 1, &o, &p, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK_ERR(emcoder_predict_texts(m, t, 1, &o, NULL, &err), EMCODER_ERR_INVALID_ARGUMENT, err);
}

/* The load parameters of ABI 2, and structs as a C caller may build them. */
static void test_params_v2(const char *model_dir) {
    EmcoderModel *m = NULL;
    EmcoderError *err = NULL;
    const char *t[] = {"I am so happy you are here!"};

    /* A zero-initialized params struct (struct_size 0) means every default. */
    EmcoderModelParams zero;
    memset(&zero, 0, sizeof zero);
    zero.n_threads = 1;
    CHECK_ERR(emcoder_model_load(model_dir, &zero, &m, &err), EMCODER_OK, err);
    CHECK(emcoder_model_scratch_bound(m) > 0);
    CHECK(emcoder_model_memory_budget(m) == 2 * emcoder_model_scratch_bound(m));
    /* A zero-initialized options struct: one deterministic pass, seed 0. */
    EmcoderPredictOptions zo;
    memset(&zo, 0, sizeof zo);
    EmcoderPrediction *p = NULL;
    CHECK_ERR(emcoder_predict(m, t, 1, &zo, &p, &err), EMCODER_OK, err);
    CHECK(emcoder_prediction_n_samples(p, 0) == 0 && emcoder_prediction_logits(p, 0) != NULL);
    emcoder_prediction_free(p);
    emcoder_model_free(m);

    /* The instruction-set override: a named level, an unknown one. */
    EmcoderModelParams params = emcoder_model_default_params();
    params.n_threads = 1;
    params.isa = "generic";
    CHECK_ERR(emcoder_model_load(model_dir, &params, &m, &err), EMCODER_OK, err);
    CHECK(m && strcmp(emcoder_model_isa(m), "generic") == 0);
    emcoder_model_free(m);
    params.isa = "sse9";
    err = NULL;
    int32_t code = emcoder_model_load(model_dir, &params, &m, &err);
    CHECK(err && strstr(emcoder_error_message(err), "sse9") != NULL);
    CHECK_ERR(code, EMCODER_ERR_INVALID_ARGUMENT, err);
    CHECK(m == NULL);

    /* Copied weights and the finiteness check give the numbers of the mapped model. */
    params.isa = NULL;
    EmcoderModel *mapped = NULL;
    CHECK_ERR(emcoder_model_load(model_dir, &params, &mapped, &err), EMCODER_OK, err);
    CHECK(emcoder_model_isa(mapped) != NULL);
    params.copy_weights = 1;
    params.refuse_non_finite = 1;
    params.memory_budget = 64u << 20;
    CHECK_ERR(emcoder_model_load(model_dir, &params, &m, &err), EMCODER_OK, err);
    CHECK(emcoder_model_memory_budget(m) == 64u << 20);
    EmcoderPrediction *a = NULL, *b = NULL;
    CHECK(emcoder_predict(mapped, t, 1, NULL, &a, NULL) == EMCODER_OK);
    CHECK(emcoder_predict(m, t, 1, NULL, &b, NULL) == EMCODER_OK);
    max_diff = 0;
    CHECK(a && b && stats_equal(emcoder_prediction_labels(a, 0), emcoder_prediction_labels(b, 0),
                                emcoder_model_num_labels(m)));
    CHECK(max_diff == 0.0f);
    emcoder_prediction_free(a);
    emcoder_prediction_free(b);
    emcoder_model_free(m);
    emcoder_model_free(mapped);
}

typedef struct {
    const EmcoderModel *model;
    const Case *c;
    size_t num_labels;
    int ok;
} Worker;

static void *worker_main(void *arg) {
    Worker *w = arg;
    w->ok = 1;
    for (int round = 0; round < 2; round++) w->ok &= run_case(w->model, w->c, w->num_labels);
    return NULL;
}

/* Several threads predict at once on one model; every result equals the Rust API's. */
static void test_threads(const EmcoderModel *m, const Case *c, size_t nl) {
    enum { N = 4 };
    pthread_t threads[N];
    Worker workers[N];
    for (int i = 0; i < N; i++) {
        workers[i] = (Worker){m, c, nl, 0};
        CHECK(pthread_create(&threads[i], NULL, worker_main, &workers[i]) == 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        CHECK(workers[i].ok);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <model_dir> <expected_file>\n", argv[0]);
        return 2;
    }
    const char *model_dir = argv[1];
    Expected ex;
    read_expected(argv[2], &ex);
    printf("libemcoder %s, ABI %u\n", emcoder_version(), emcoder_abi_version());

    test_version_and_defaults();
    test_null_handles();
    test_panic_guard();
    test_load_errors(model_dir);
    test_params_v2(model_dir);

    EmcoderModelParams params = emcoder_model_default_params();
    params.n_threads = 2;
    EmcoderModel *m = NULL;
    EmcoderError *err = NULL;
    if (emcoder_model_load(model_dir, &params, &m, &err) != EMCODER_OK) {
        fprintf(stderr, "cannot load %s: %s\n", model_dir, emcoder_error_message(err));
        emcoder_error_free(err);
        return 1;
    }
    CHECK(err == NULL);
    test_labels(m, &ex);
    for (size_t k = 0; k < ex.n_cases; k++) {
        for (int sized = 0; sized < 2; sized++) {
            int ok = run_case_with(m, &ex.cases[k], ex.num_labels, sized);
            if (!ok)
                fprintf(stderr, "case %zu (n_samples %u) differs from the Rust API (%s)\n", k,
                        ex.cases[k].n_samples, sized ? "emcoder_predict_texts" : "emcoder_predict");
            CHECK(ok);
        }
    }
    test_sized_texts(m);
    test_decision_error(m, &ex);
    /* Where a text stops on decisions depends on its own samples only. */
    for (size_t k = 0; k < ex.n_cases; k++)
        if (k == 0 || ex.cases[k].decision_error != 0.0)
            test_batch_invariance(m, &ex.cases[k], ex.num_labels);
    test_predict_errors(m);
    test_threads(m, &ex.cases[0], ex.num_labels);

    /* A prediction owns its data: it outlives the model. */
    EmcoderPrediction *p = NULL;
    const Case *c = &ex.cases[0];
    EmcoderPredictOptions o = case_options(c);
    CHECK(emcoder_predict(m, (const char *const *)c->texts, c->n_texts, &o, &p, NULL) == EMCODER_OK);
    emcoder_model_free(m);
    const EmcoderLabelStats *s = emcoder_prediction_labels(p, 0);
    CHECK(s && stats_equal(s, c->stats, ex.num_labels));
    emcoder_prediction_free(p);

    free_expected(&ex);
    printf("%d checks, %d failed; max |C - Rust| = %g\n", checks, failures, (double)max_diff);
    return failures == 0 ? 0 : 1;
}
