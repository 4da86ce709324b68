// Example: classify texts with the C++ wrapper and print the most likely emotions.
//
//   make lib
//   c++ -std=c++20 -Iinclude -Ibindings/cpp bindings/cpp/example.cpp -o example
//       -Ltarget/release -lemcoder -Wl,-rpath,$PWD/target/release      (one command line)
//   ./example models/emcoder-mini "I am so happy you are here!" "This is awful."
#include "emcoder.hpp"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <model_dir> <text>...\n", argv[0]);
        return 2;
    }
    try {
        emcoder::Model model(argv[1]);
        std::vector<std::string> texts(argv + 2, argv + argc);
        emcoder::Prediction p = model.predict(texts, {.n_samples = 30});
        for (size_t t = 0; t < p.num_texts(); t++) {
            auto stats = p.labels(t);
            std::vector<size_t> order(stats.size());
            std::iota(order.begin(), order.end(), 0);
            std::sort(order.begin(), order.end(),
                      [&](size_t a, size_t b) { return stats[a].mean > stats[b].mean; });
            std::printf("%s  (%zu tokens, %u samples)\n", texts[t].c_str(), p.n_tokens(t),
                        p.n_samples(t));
            for (size_t k = 0; k < 5 && k < order.size(); k++) {
                const EmcoderLabelStats &s = stats[order[k]];
                std::printf("  %c %-15s %.3f +- %.3f  (epistemic %.4f)\n", s.predicted ? '*' : ' ',
                            std::string(model.label(order[k])).c_str(), s.mean, s.std, s.epistemic);
            }
        }
    } catch (const emcoder::Error &e) {
        std::fprintf(stderr, "emcoder: %s (%s)\n", e.what(), std::string(e.code_name()).c_str());
        return 1;
    }
    return 0;
}
