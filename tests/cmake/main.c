/*
 * The program of tests/cmake: checks the library's ABI and version against the header and the
 * CMake package, then predicts texts with a model and prints the labels it predicts.
 *
 *   predict_shared <model_dir> <text>...     (EXPECTED_VERSION: the package's version)
 */
#include <emcoder.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s <model_dir> <text>...\n", argv[0]);
        return 2;
    }
    if (emcoder_abi_version() < EMCODER_ABI_VERSION) {
        fprintf(stderr, "libemcoder ABI %u, header %u\n", emcoder_abi_version(), EMCODER_ABI_VERSION);
        return 1;
    }
    if (strcmp(emcoder_version(), EXPECTED_VERSION) != 0) {
        fprintf(stderr, "libemcoder %s, CMake package %s\n", emcoder_version(), EXPECTED_VERSION);
        return 1;
    }
    printf("libemcoder %s (ABI %u)\n", emcoder_version(), emcoder_abi_version());
    EmcoderModel *model = NULL;
    EmcoderPrediction *pred = NULL;
    EmcoderError *err = NULL;
    if (emcoder_model_load(argv[1], NULL, &model, &err) != EMCODER_OK ||
        emcoder_predict(model, (const char *const *)(argv + 2), (size_t)(argc - 2), NULL, &pred,
                        &err) != EMCODER_OK) {
        fprintf(stderr, "emcoder: %s (%s)\n", emcoder_error_message(err),
                emcoder_error_code_name(emcoder_error_code(err)));
        emcoder_error_free(err);
        emcoder_model_free(model);
        return 1;
    }
    int status = 0;
    for (size_t t = 0; t < emcoder_prediction_num_texts(pred); t++) {
        const EmcoderLabelStats *s = emcoder_prediction_labels(pred, t);
        size_t n = 0;
        printf("%s\n", argv[2 + t]);
        for (size_t i = 0; i < emcoder_prediction_num_labels(pred); i++) {
            if (!(s[i].mean >= 0.0f && s[i].mean <= 1.0f && s[i].std >= 0.0f)) {
                fprintf(stderr, "label %zu: mean %f, std %f out of range\n", i, s[i].mean, s[i].std);
                status = 1;
            }
            if (s[i].predicted) {
                printf("  %-15s %.3f +- %.3f\n", emcoder_model_label(model, i), s[i].mean, s[i].std);
                n++;
            }
        }
        if (n == 0) {
            fprintf(stderr, "no label predicted for \"%s\"\n", argv[2 + t]);
            status = 1;
        }
    }
    emcoder_prediction_free(pred);
    emcoder_model_free(model);
    return status;
}
