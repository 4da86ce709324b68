/*
 * An "old caller": a program compiled against smaller copies of the params and options structs
 * (the ABI 1 fields behind `struct_size`, as a header that predates memory_budget, isa,
 * copy_weights, refuse_non_finite, cancel, timeout_ms and fail_fast_on_memory declared them;
 * and the ABI 2 options, as the header before decision_error declared them), linked against
 * today's libemcoder.so. It does not include emcoder.h: it declares what it uses, as those older
 * headers did. scripts/test-bindings.sh builds and runs it.
 *
 * Usage: test_old_caller <model_dir>
 *
 * Each struct sits at the very end of a page followed by an inaccessible page, so a library
 * that read (or wrote) one byte past `struct_size` would crash the test. Checks: the init
 * functions fill the fields that fit and nothing past them; a load and a prediction with the
 * small structs work and read their fields (n_samples 7 gives 7 samples); the defaults of the
 * small structs give the numbers of NULL options. The ABI 2 options (48 bytes) keep garbage in
 * their tail padding (bytes 41..47): the library must neither read it as ABI 3's
 * decision_error nor read past the struct, so the call gets the fixed-N behaviour of ABI 2.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The structs as the older header declared them. */
typedef struct {
    uint32_t struct_size;
    const char *tokenizer_path;
    uint32_t n_threads;
    uint32_t max_tokens;
    uint32_t device;
    uint32_t max_rows;
    uint32_t precision;
} OldModelParams;

typedef struct {
    uint32_t struct_size;
    uint32_t n_samples;
    uint64_t seed;
    uint8_t truncate;
    float tolerance;
} OldPredictOptions;

typedef struct {
    float mean, std, total_entropy, aleatoric, epistemic;
    uint8_t predicted;
} OldLabelStats;

/* EmcoderPredictOptions of ABI 2 (`struct_size` 48). */
typedef struct {
    uint32_t struct_size;
    uint32_t n_samples;
    uint64_t seed;
    uint8_t truncate;
    float tolerance;
    const volatile int32_t *cancel;
    uint64_t timeout_ms;
    uint8_t fail_fast_on_memory;
} Abi2PredictOptions;

_Static_assert(sizeof(OldModelParams) == 40, "the ABI 1 fields of EmcoderModelParams");
_Static_assert(sizeof(OldPredictOptions) == 24, "the ABI 1 fields of EmcoderPredictOptions");
_Static_assert(sizeof(Abi2PredictOptions) == 48, "the ABI 2 EmcoderPredictOptions");
_Static_assert(offsetof(Abi2PredictOptions, fail_fast_on_memory) == 40, "ABI 2 layout");

typedef struct EmcoderModel EmcoderModel;
typedef struct EmcoderPrediction EmcoderPrediction;
typedef struct EmcoderError EmcoderError;
uint32_t emcoder_abi_version(void);
void emcoder_model_params_init(OldModelParams *params, uint32_t struct_size);
/* Declared for void *: this program passes both of its options structs. */
void emcoder_predict_options_init(void *options, uint32_t struct_size);
int32_t emcoder_model_load(const char *dir, const OldModelParams *params, EmcoderModel **out,
                           EmcoderError **err);
int32_t emcoder_predict(const EmcoderModel *model, const char *const *texts, size_t n_texts,
                        const void *options, EmcoderPrediction **out, EmcoderError **err);
uint32_t emcoder_prediction_n_samples(const EmcoderPrediction *p, size_t text);
size_t emcoder_prediction_num_labels(const EmcoderPrediction *p);
const OldLabelStats *emcoder_prediction_labels(const EmcoderPrediction *p, size_t text);
void emcoder_prediction_free(EmcoderPrediction *p);
uint32_t emcoder_model_n_threads(const EmcoderModel *m);
void emcoder_model_free(EmcoderModel *m);
const char *emcoder_error_message(const EmcoderError *e);
void emcoder_error_free(EmcoderError *e);

static int failures = 0;
#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                          \
        }                                                                        \
    } while (0)

/* Field by field: the structs have padding, which memcmp would compare too. */
static int same_stats(const OldLabelStats *a, const OldLabelStats *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (a[i].mean != b[i].mean || a[i].std != b[i].std ||
            a[i].total_entropy != b[i].total_entropy || a[i].aleatoric != b[i].aleatoric ||
            a[i].epistemic != b[i].epistemic || a[i].predicted != b[i].predicted)
            return 0;
    return 1;
}

/* Predicts `text` with `options` and with NULL options: 1 when the first drew 50 samples and
 * both gave the same numbers (the options were read as the defaults). */
static int same_as_defaults(const EmcoderModel *m, const char *text, const void *options) {
    const char *texts[] = {text};
    EmcoderPrediction *a = NULL, *b = NULL;
    EmcoderError *err = NULL;
    int ok = emcoder_predict(m, texts, 1, options, &a, &err) == 0 &&
             emcoder_predict(m, texts, 1, NULL, &b, &err) == 0 &&
             emcoder_prediction_n_samples(a, 0) == 50 &&
             emcoder_prediction_num_labels(a) > 0 &&
             same_stats(emcoder_prediction_labels(a, 0), emcoder_prediction_labels(b, 0),
                        emcoder_prediction_num_labels(a));
    if (err) fprintf(stderr, "predict: %s\n", emcoder_error_message(err));
    emcoder_error_free(err);
    emcoder_prediction_free(a);
    emcoder_prediction_free(b);
    return ok;
}

/* `size` bytes ending exactly where an inaccessible page begins, filled with 0xAB. */
static void *before_guard_page(size_t size) {
    long page = sysconf(_SC_PAGESIZE);
    unsigned char *mem = mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED || mprotect(mem + page, (size_t)page, PROT_NONE) != 0) {
        perror("mmap");
        return NULL;
    }
    unsigned char *p = mem + page - size;
    memset(p, 0xAB, size);
    return p;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s <model_dir>\n", argv[0]);
        return 2;
    }
    CHECK(emcoder_abi_version() >= 2);
    OldModelParams *params = before_guard_page(sizeof *params);
    OldPredictOptions *opts = before_guard_page(sizeof *opts);
    if (!params || !opts) return 2;

    emcoder_model_params_init(params, sizeof *params);
    CHECK(params->struct_size == sizeof *params && params->tokenizer_path == NULL);
    CHECK(params->max_tokens == 4096 && params->device == 0 && params->precision == 0);
    emcoder_predict_options_init(opts, sizeof *opts);
    CHECK(opts->struct_size == sizeof *opts && opts->n_samples == 50 && opts->seed == 42);
    CHECK(opts->truncate == 0 && opts->tolerance == 0.0f);

    params->n_threads = 2;
    EmcoderModel *m = NULL;
    EmcoderError *err = NULL;
    if (emcoder_model_load(argv[1], params, &m, &err) != 0) {
        fprintf(stderr, "load: %s\n", emcoder_error_message(err));
        emcoder_error_free(err);
        return 1;
    }
    CHECK(emcoder_model_n_threads(m) == 2);

    const char *texts[] = {"I am so happy you are here!"};
    EmcoderPrediction *a = NULL;
    CHECK(same_as_defaults(m, texts[0], opts));

    opts->n_samples = 7;
    CHECK(emcoder_predict(m, texts, 1, opts, &a, &err) == 0);
    CHECK(emcoder_prediction_n_samples(a, 0) == 7);
    emcoder_prediction_free(a);

    /* ABI 2 options, garbage (0xAB) in their tail padding and an inaccessible page after them:
     * 50 samples, the numbers of NULL options (no decision rule read from the padding). */
    Abi2PredictOptions *o2 = before_guard_page(sizeof *o2);
    if (!o2) return 2;
    emcoder_predict_options_init(o2, sizeof *o2);
    CHECK(o2->struct_size == 48 && o2->n_samples == 50 && o2->seed == 42);
    CHECK(o2->cancel == NULL && o2->timeout_ms == 0 && o2->fail_fast_on_memory == 0);
    const unsigned char *tail = (const unsigned char *)o2 + 41;
    int garbage = 1;
    for (size_t i = 0; i < 7; i++) garbage &= tail[i] == 0xAB;
    CHECK(garbage); /* init wrote nothing into the padding either */
    CHECK(same_as_defaults(m, texts[0], o2));
    /* Its fields are read: tolerance 1 stops after the first block of 10. */
    o2->tolerance = 1.0f;
    CHECK(emcoder_predict(m, texts, 1, o2, &a, &err) == 0);
    CHECK(emcoder_prediction_n_samples(a, 0) == 10);
    emcoder_prediction_free(a);
    /* struct_size 0 stands for this layout: read within the 48 bytes too. */
    o2->struct_size = 0;
    o2->tolerance = 0.0f;
    o2->n_samples = 9;
    CHECK(emcoder_predict(m, texts, 1, o2, &a, &err) == 0);
    CHECK(emcoder_prediction_n_samples(a, 0) == 9);
    emcoder_prediction_free(a);
    emcoder_model_free(m);

    printf("old caller (params %zu bytes, options %zu and %zu bytes): %s\n", sizeof *params,
           sizeof *opts, sizeof *o2, failures ? "FAILED" : "ok");
    return failures == 0 ? 0 : 1;
}
