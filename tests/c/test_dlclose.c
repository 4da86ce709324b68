/*
 * emcoder_model_free joins the model's threads, so dlclose right after it is safe: this program
 * dlopens libemcoder.so, loads a model, predicts, frees everything and dlcloses the library, 20
 * times. It links no libemcoder (only -ldl); emcoder.h gives it the types, dlsym the functions.
 * scripts/test-bindings.sh builds and runs it.
 *
 * Usage: test_dlclose <path/to/libemcoder.so> <model_dir>
 *
 * The library is used from a thread of each round and dlclosed by the main thread, so that
 * it is really unmapped each time (checked with RTLD_NOLOAD): a worker thread still running
 * library code after dlclose would crash the process. A crash, a failed call, a failed dlclose
 * or a library left mapped fails the test. Rounds 0 and 1 also set and remove a log callback.
 */
#define _POSIX_C_SOURCE 200809L
#include "emcoder.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    void (*params_init)(EmcoderModelParams *, uint32_t);
    int32_t (*load)(const char *, const EmcoderModelParams *, EmcoderModel **, EmcoderError **);
    int32_t (*predict)(const EmcoderModel *, const char *const *, size_t,
                       const EmcoderPredictOptions *, EmcoderPrediction **, EmcoderError **);
    size_t (*num_texts)(const EmcoderPrediction *);
    void (*prediction_free)(EmcoderPrediction *);
    void (*model_free)(EmcoderModel *);
    int32_t (*set_log)(EmcoderLogCallback, void *, int32_t);
} Api;

/* Looks a symbol up; the function-pointer copy goes through memcpy (ISO C has no cast from
 * void * to a function pointer). */
static int sym(void *lib, const char *name, void *fn, size_t size) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "dlsym %s: %s\n", name, dlerror());
        return 0;
    }
    memcpy(fn, &p, size);
    return 1;
}

static void count_log(int32_t level, const char *message, void *user) {
    (void)level;
    (void)message;
    ++*(int *)user;
}

typedef struct {
    Api api;
    const char *model_dir;
    int round;
    int *logged;
    int ok;
} Round;

/* One round's use of the library, on a thread of its own: the thread-local destructors that
 * Rust registers when a thread first enters the library run when that thread exits. (glibc
 * keeps a library loaded while such destructors are pending, so calls made from the thread
 * that dlcloses would keep it mapped and hide what this test is after.) */
static void *use_library(void *arg) {
    Round *r = arg;
    Api *a = &r->api;
    if (r->round < 2 && a->set_log(count_log, r->logged, EMCODER_LOG_DEBUG) != EMCODER_OK)
        return NULL;
    EmcoderModelParams params;
    a->params_init(&params, sizeof params);
    params.n_threads = 2;
    EmcoderModel *m = NULL;
    EmcoderPrediction *p = NULL;
    const char *texts[] = {"I am so happy you are here!", "This is awful."};
    if (a->load(r->model_dir, &params, &m, NULL) != EMCODER_OK ||
        a->predict(m, texts, 2, NULL, &p, NULL) != EMCODER_OK || a->num_texts(p) != 2) {
        fprintf(stderr, "round %d: load or predict failed\n", r->round);
        return NULL;
    }
    a->prediction_free(p);
    a->model_free(m);
    if (r->round < 2) a->set_log(NULL, NULL, EMCODER_LOG_DEBUG);
    r->ok = 1;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s <libemcoder.so> <model_dir>\n", argv[0]);
        return 2;
    }
    int rounds = 20, unloaded = 0, logged = 0;
    for (int r = 0; r < rounds; r++) {
        void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!lib) {
            fprintf(stderr, "round %d: dlopen: %s\n", r, dlerror());
            return 1;
        }
        Round round = {.model_dir = argv[2], .round = r, .logged = &logged, .ok = 0};
        Api *a = &round.api;
        if (!sym(lib, "emcoder_model_params_init", &a->params_init, sizeof a->params_init) ||
            !sym(lib, "emcoder_model_load", &a->load, sizeof a->load) ||
            !sym(lib, "emcoder_predict", &a->predict, sizeof a->predict) ||
            !sym(lib, "emcoder_prediction_num_texts", &a->num_texts, sizeof a->num_texts) ||
            !sym(lib, "emcoder_prediction_free", &a->prediction_free, sizeof a->prediction_free) ||
            !sym(lib, "emcoder_model_free", &a->model_free, sizeof a->model_free) ||
            !sym(lib, "emcoder_set_log_callback", &a->set_log, sizeof a->set_log))
            return 1;
        pthread_t th;
        if (pthread_create(&th, NULL, use_library, &round) != 0 || pthread_join(th, NULL) != 0 ||
            !round.ok)
            return 1;
        /* Right after emcoder_model_free: no thread of the library may be left running. */
        if (dlclose(lib) != 0) {
            fprintf(stderr, "round %d: dlclose: %s\n", r, dlerror());
            return 1;
        }
        void *still = dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD);
        if (still)
            dlclose(still);
        else
            unloaded++;
    }
    printf("dlopen/load/predict/free/dlclose: %d rounds, the library was unmapped after %d of "
           "them; %d log messages\n",
           rounds, unloaded, logged);
    /* Unmapped every time: nothing of it was left running or registered. */
    return logged > 0 && unloaded == rounds ? 0 : 1;
}
