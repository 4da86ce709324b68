/*
 * The smallest useful program over libemcoder (the one in bindings/README.md).
 * scripts/test-bindings.sh builds it from an installed prefix through pkg-config, shared
 * (emcoder.pc) and static (emcoder-static.pc), and runs it.
 *
 *   cc app.c $(pkg-config --cflags --libs emcoder) -o app && ./app <model_dir> "some text"
 */
#include <emcoder.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s <model_dir> <text>...\n", argv[0]);
        return 2;
    }
    if (emcoder_abi_version() != EMCODER_ABI_VERSION) {
        fprintf(stderr, "libemcoder ABI %u, header %u\n", emcoder_abi_version(), EMCODER_ABI_VERSION);
        return 1;
    }
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
    for (size_t t = 0; t < emcoder_prediction_num_texts(pred); t++) {
        const EmcoderLabelStats *s = emcoder_prediction_labels(pred, t);
        printf("%s\n", argv[2 + t]);
        for (size_t i = 0; i < emcoder_prediction_num_labels(pred); i++)
            if (s[i].predicted)
                printf("  %-15s %.3f +- %.3f\n", emcoder_model_label(model, i), s[i].mean, s[i].std);
    }
    emcoder_prediction_free(pred);
    emcoder_model_free(model);
    return 0;
}
