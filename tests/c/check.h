/*
 * The checking helpers shared by the C tests of tests/c: CHECK counts a condition,
 * CHECK_ERR a call's status against the code wanted and its error object. Each program
 * defines `failures` and `checks` (CHECK_COUNTERS) and exits 0 only when failures is 0.
 */
#ifndef EMCODER_TEST_CHECK_H
#define EMCODER_TEST_CHECK_H

#include "emcoder.h"

#include <stdio.h>
#include <stdlib.h>

extern int failures;
extern int checks;
#define CHECK_COUNTERS \
    int failures = 0;  \
    int checks = 0

#define CHECK(cond)                                                                  \
    do {                                                                             \
        checks++;                                                                    \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* Runs `call`, checks that it returns `want` and that the error object `err` (set by the call)
 * agrees; frees the error and resets `err` to NULL. */
#define CHECK_ERR(call, want, err)                               \
    do {                                                         \
        int32_t code_ = (call);                                  \
        check_err(code_, (want), (err), __FILE__, __LINE__);     \
        (err) = NULL;                                            \
    } while (0)

static inline void check_err(int32_t code, int32_t want, EmcoderError *err, const char *file,
                             int line) {
    checks++;
    if (code != want || (err != NULL && emcoder_error_code(err) != code)) {
        fprintf(stderr, "%s:%d: got %s, expected %s (%s)\n", file, line,
                emcoder_error_code_name(code), emcoder_error_code_name(want),
                emcoder_error_message(err));
        failures++;
    } else if (want != EMCODER_OK && err != NULL && emcoder_error_message(err)[0] == '\0') {
        fprintf(stderr, "%s:%d: %s has an empty message\n", file, line,
                emcoder_error_code_name(code));
        failures++;
    }
    emcoder_error_free(err);
}

static inline void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        perror("calloc");
        exit(2);
    }
    return p;
}

#endif /* EMCODER_TEST_CHECK_H */
