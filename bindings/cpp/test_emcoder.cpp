// Test of the C++ wrapper emcoder.hpp (scripts/test-bindings.sh builds and runs it).
//
// Usage: test_emcoder_cpp <model_dir> <expected_file>
// Checks the numbers against the Rust API (the file written by ffi/examples/expected_values.rs)
// through every input form (initializer list, std::span, std::vector<std::string>, views into
// one buffer without terminators), stopping on decisions (PredictOptions::decision_error: the
// samples each text drew and its numbers, the invalid values), the exceptions (code and
// message) of each error path, the
// load parameters (isa, memory budget, copied weights), cancellation (a CancelToken set before
// the call and from another thread, a timeout), the log callback, RAII ownership and moves, and
// concurrent predictions on one model from several std::threads.
#include "emcoder.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

int failures = 0;
int checks = 0;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        checks++;                                                                       \
        if (!(cond)) {                                                                  \
            std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond "\n"; \
            failures++;                                                                 \
        }                                                                               \
    } while (0)

// Runs `body`, expecting an emcoder::Error with `code`.
template <class F>
void expect_error(int32_t code, F body, int line) {
    checks++;
    try {
        body();
        std::cerr << "line " << line << ": no exception, expected code " << code << "\n";
        failures++;
    } catch (const emcoder::Error &e) {
        if (e.code() != code || std::string(e.what()).empty()) {
            std::cerr << "line " << line << ": got " << e.code_name() << " (" << e.what()
                      << "), expected code " << code << "\n";
            failures++;
        }
    }
}
#define EXPECT_ERROR(code, ...) expect_error((code), [&] { __VA_ARGS__; }, __LINE__)

struct Case {
    uint32_t n_samples = 0;
    uint64_t seed = 0;
    double decision_error = 0.0;  // 0: off
    std::vector<std::string> texts;
    std::vector<size_t> n_tokens;
    std::vector<uint32_t> drawn;  // the samples each text drew
    std::vector<std::vector<EmcoderLabelStats>> stats;
};

struct Expected {
    std::vector<std::string> labels;
    std::vector<Case> cases;
};

Expected read_expected(const char *path) {
    std::ifstream f(path);
    if (!f) throw std::runtime_error(std::string("cannot open ") + path);
    Expected ex;
    std::string line, tag;
    while (std::getline(f, line)) {
        std::istringstream in(line);
        in >> tag;
        if (tag == "label") {
            ex.labels.push_back(line.substr(6));
        } else if (tag == "case") {
            Case c;
            size_t n;
            in >> c.n_samples >> c.seed >> n >> c.decision_error;
            if (!in) throw std::runtime_error("bad expected line: " + line);
            ex.cases.push_back(c);
        } else if (tag == "text") {
            size_t n_tokens;
            uint32_t drawn;
            std::string hex, text;
            in >> n_tokens >> drawn >> hex;
            if (!in) throw std::runtime_error("bad expected line: " + line);
            for (size_t i = 0; i + 1 < hex.size(); i += 2)
                text.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
            ex.cases.back().texts.push_back(text);
            ex.cases.back().n_tokens.push_back(n_tokens);
            ex.cases.back().drawn.push_back(drawn);
            ex.cases.back().stats.emplace_back();
        } else if (tag == "stat") {
            EmcoderLabelStats s{};
            unsigned predicted;
            in >> s.mean >> s.std >> s.total_entropy >> s.aleatoric >> s.epistemic >> predicted;
            s.predicted = static_cast<uint8_t>(predicted);
            ex.cases.back().stats.back().push_back(s);
        }
    }
    return ex;
}

bool same(std::span<const EmcoderLabelStats> a, const std::vector<EmcoderLabelStats> &b) {
    auto close = [](float x, float y) { return std::fabs(x - y) <= 1e-6f; };
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); i++)
        if (!close(a[i].mean, b[i].mean) || !close(a[i].std, b[i].std) ||
            !close(a[i].total_entropy, b[i].total_entropy) ||
            !close(a[i].aleatoric, b[i].aleatoric) || !close(a[i].epistemic, b[i].epistemic) ||
            a[i].predicted != b[i].predicted)
            return false;
    return true;
}

bool matches(const emcoder::Prediction &p, const Case &c) {
    bool ok = p.num_texts() == c.texts.size();
    for (size_t i = 0; ok && i < c.texts.size(); i++) {
        ok = p.n_tokens(i) == c.n_tokens[i] && p.n_samples(i) == c.drawn[i] &&
             same(p.labels(i), c.stats[i]) && p.logits(i).empty() == (c.n_samples != 0);
    }
    return ok;
}

emcoder::PredictOptions options(const Case &c) {
    return {.n_samples = c.n_samples, .seed = c.seed, .truncate = false,
            .decision_error = c.decision_error};
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 3) {
        std::cerr << "usage: " << argv[0] << " <model_dir> <expected_file>\n";
        return 2;
    }
    const std::string dir = argv[1];
    const Expected ex = read_expected(argv[2]);

    // Errors, each with its code.
    EXPECT_ERROR(EMCODER_ERR_IO, emcoder::Model("/nonexistent/emcoder-model"));
    EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT, emcoder::Model(dir, {.device = 7}));
    EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT, emcoder::Model(dir, {.device_index = 1}));
    // A GPU this library cannot use (built without CUDA, or no driver here): a device error.
    try {
        emcoder::Model gpu(dir, {.device = EMCODER_DEVICE_CUDA, .device_index = 0});
        std::cerr << "a GPU is usable here\n";
    } catch (const emcoder::Error &e) {
        CHECK(e.code() == EMCODER_ERR_DEVICE);
        CHECK(std::string(e.what()).find("CUDA") != std::string::npos);
    }
    EXPECT_ERROR(EMCODER_ERR_IO, emcoder::Model(dir, {.tokenizer_path = "/nonexistent.json"}));
    // Precisions: one past EMCODER_PRECISION_INT8 is an invalid argument naming the valid
    // values; int8 on a GPU is a device error (int8 is CPU only, or this build has no CUDA).
    CHECK(EMCODER_ABI_VERSION == 5 && EMCODER_PRECISION_INT8 == 2);
    try {
        emcoder::Model bad(dir, {.precision = 3});
        CHECK(false);
    } catch (const emcoder::Error &e) {
        CHECK(e.code() == EMCODER_ERR_INVALID_ARGUMENT);
        CHECK(std::string(e.what()).find("EMCODER_PRECISION_INT8") != std::string::npos);
    }
    EXPECT_ERROR(EMCODER_ERR_DEVICE, emcoder::Model(dir, {.device = EMCODER_DEVICE_CUDA,
                                                          .precision = EMCODER_PRECISION_INT8}));

    emcoder::Model model(dir, {.n_threads = 2});
    CHECK(model.n_threads() == 2);
    CHECK(model.num_labels() == ex.labels.size());
    const auto labels = model.labels();
    CHECK(std::equal(labels.begin(), labels.end(), ex.labels.begin(), ex.labels.end()));
    bool threw = false;
    try {
        (void)model.label(model.num_labels());
    } catch (const std::out_of_range &) {
        threw = true;
    }
    CHECK(threw);

    // Every case against the Rust API, with each input form.
    for (const Case &c : ex.cases) {
        CHECK(matches(model.predict(c.texts, options(c)), c));  // std::vector<std::string>
        std::vector<std::string_view> views(c.texts.begin(), c.texts.end());
        CHECK(matches(model.predict(std::span<const std::string_view>(views), options(c)), c));
    }
    const Case &c0 = ex.cases[0];
    emcoder::Prediction one = model.predict({c0.texts[0]}, options(c0));  // initializer list
    CHECK(one.num_texts() == 1 && same(one.labels(0), c0.stats[0]));
    CHECK(model.predict({"ok"}).n_samples(0) == EMCODER_DEFAULT_SAMPLES);

    // Stopping on decisions: the expected case (checked above with the others) has texts that
    // stop early, so a dropped option would have failed it; the invalid values throw.
    {
        const Case *d = nullptr;
        for (const Case &c : ex.cases)
            if (c.decision_error != 0.0) d = &c;
        CHECK(d != nullptr && d->n_samples == 50 && d->decision_error == 0.01);
        if (d) {
            const emcoder::Prediction p = model.predict(d->texts, options(*d));
            bool early = false;
            for (size_t i = 0; i < d->texts.size(); i++) {
                CHECK(p.n_samples(i) <= d->n_samples && p.n_samples(i) == d->drawn[i]);
                early = early || p.n_samples(i) < d->n_samples;
            }
            CHECK(early);
        }
        for (double bad : {-0.01, 1.0, std::nan(""), HUGE_VAL}) {
            try {
                (void)model.predict({"ok"}, {.decision_error = bad});
                CHECK(false);
            } catch (const emcoder::Error &e) {
                CHECK(e.code() == EMCODER_ERR_INVALID_ARGUMENT);
                CHECK(std::string(e.what()).find("decision_error") != std::string::npos);
            }
        }
        CHECK(model.predict({"ok"}, {.decision_error = 0.0}).n_samples(0) == 50);
    }

    // Adaptive sampling by tolerance: a loose one stops every text after its first block, with
    // the statistics of a fixed run of 10 (N is a prefix); one nobody meets draws all 50, as
    // the fixed run; a bad value, or both rules at once, throw.
    {
        const std::vector<std::string_view> two = {"ok", "I am so happy you are here!"};
        const emcoder::Prediction loose = model.predict(two, {.n_samples = 50, .tolerance = 1.0f});
        const emcoder::Prediction ten = model.predict(two, {.n_samples = 10});
        const emcoder::Prediction tight = model.predict(two, {.n_samples = 50, .tolerance = 1e-9f});
        const emcoder::Prediction fifty = model.predict(two, {.n_samples = 50});
        for (size_t i = 0; i < two.size(); i++) {
            CHECK(loose.n_samples(i) == 10);
            CHECK(same(loose.labels(i), {ten.labels(i).begin(), ten.labels(i).end()}));
            CHECK(tight.n_samples(i) == 50);
            CHECK(same(tight.labels(i), {fifty.labels(i).begin(), fifty.labels(i).end()}));
        }
        for (float bad : {-0.01f, std::nanf(""), HUGE_VALF})
            EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT, model.predict({"ok"}, {.tolerance = bad}));
        EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT,
                     model.predict({"ok"}, {.tolerance = 0.01f, .decision_error = 0.01}));
    }

    // Input errors.
    EXPECT_ERROR(EMCODER_ERR_INVALID_UTF8, model.predict({"fine", "bad \x80 byte"}));
    EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT, model.predict({std::string_view("a\0b", 3)}));
    std::string long_text;
    for (int i = 0; i < 5000; i++) long_text += "a ";
    EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT, model.predict({long_text}, {.n_samples = 0}));
    CHECK(model.predict({long_text}, {.n_samples = 0, .truncate = true}).n_tokens(0) == 4096);
    emcoder::Prediction empty = model.predict(std::vector<std::string>{});
    CHECK(empty.num_texts() == 0 && empty.num_labels() == 0);
    threw = false;
    try {
        (void)one.labels(1);
    } catch (const std::out_of_range &) {
        threw = true;
    }
    CHECK(threw);

    // Views into one buffer, no terminators: the numbers of the NUL-terminated texts.
    {
        std::string joined;
        for (const auto &t : c0.texts) joined += t;
        std::vector<std::string_view> parts;
        size_t at = 0;
        for (const auto &t : c0.texts) {
            parts.emplace_back(joined.data() + at, t.size());
            at += t.size();
        }
        CHECK(matches(model.predict(std::span<const std::string_view>(parts), options(c0)), c0));
    }

    // Cancellation: a token cancelled before the call, one cancelled by another thread during a
    // long call, and a timeout; the model keeps its numbers afterwards.
    {
        emcoder::CancelToken token;
        token.cancel();
        CHECK(token.cancelled());
        EXPECT_ERROR(EMCODER_ERR_CANCELLED, model.predict({"ok"}, {.cancel = &token}));
        token.reset();
        CHECK(model.predict({"ok"}, {.cancel = &token}).num_texts() == 1);

        std::string words;
        for (int i = 0; i < 200; i++) words += "a b ";
        const std::vector<std::string> heavy(16, words);  // 16 x 402 tokens x 2000 samples
        std::thread canceller([&] {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            token.cancel();
        });
        const auto t0 = std::chrono::steady_clock::now();
        EXPECT_ERROR(EMCODER_ERR_CANCELLED,
                     model.predict(heavy, {.n_samples = 2000, .cancel = &token}));
        canceller.join();
        CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
        try {
            (void)model.predict(heavy, {.n_samples = 2000, .timeout = std::chrono::milliseconds(1)});
            CHECK(false);
        } catch (const emcoder::Error &e) {
            CHECK(e.code() == EMCODER_ERR_CANCELLED && e.code_name() == "EMCODER_ERR_CANCELLED");
            CHECK(std::string(e.what()).find("deadline") != std::string::npos);
        }
        CHECK(matches(model.predict(c0.texts, options(c0)), c0));
    }

    // Load parameters: the instruction-set override, a memory budget, copied weights; the log
    // callback hears of the load.
    {
        std::atomic<int> infos{0};
        emcoder::set_log_callback([&](int32_t level, std::string_view message) {
            if (level == EMCODER_LOG_INFO && message.find("budget") != std::string_view::npos)
                infos++;
        });
        emcoder::Model generic(dir, {.n_threads = 1, .memory_budget = 4u << 20,
                                     .isa = "generic", .copy_weights = true,
                                     .refuse_non_finite = true});
        emcoder::set_log_callback(nullptr);
        CHECK(infos.load() == 1);
        CHECK(generic.isa() == "generic" && generic.memory_budget() == 4u << 20);
        CHECK(generic.scratch_bound() > generic.memory_budget());
        CHECK(generic.predict({"ok"}, {.n_samples = 3}).n_samples(0) == 3);
        // 32 texts x 100 words x 50 samples need a full chunk of scratch: over the budget.
        std::string hundred;
        for (int i = 0; i < 50; i++) hundred += "a b ";
        try {
            (void)generic.predict(std::vector<std::string>(32, hundred));
            CHECK(false);
        } catch (const emcoder::Error &e) {
            CHECK(e.code() == EMCODER_ERR_OUT_OF_MEMORY);
            CHECK(std::string(e.what()).find("memory_budget") != std::string::npos);
        }
        EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT, emcoder::Model(dir, {.isa = "sse9"}));
        EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT,
                     emcoder::set_log_callback([](int32_t, std::string_view) {}, 9));
    }

    // int8 precision (ABI 5): its own numbers, within 0.02 of f32's on the same texts and seed
    // (the quantization error of this tiny random fixture), the same on a second run.
    {
        emcoder::Model q8(dir, {.n_threads = 2, .precision = EMCODER_PRECISION_INT8});
        const emcoder::PredictOptions o{.n_samples = 20, .seed = 7};
        const emcoder::Prediction a = model.predict(c0.texts, o);
        const emcoder::Prediction b = q8.predict(c0.texts, o);
        const emcoder::Prediction again = q8.predict(c0.texts, o);
        CHECK(b.num_texts() == c0.texts.size());
        float worst = 0;
        for (size_t i = 0; i < b.num_texts(); i++) {
            CHECK(b.n_tokens(i) == a.n_tokens(i) && b.n_samples(i) == 20);
            CHECK(same(again.labels(i), {b.labels(i).begin(), b.labels(i).end()}));
            for (size_t j = 0; j < b.num_labels(); j++)
                worst = std::max(worst, std::abs(a.labels(i)[j].mean - b.labels(i)[j].mean));
        }
        CHECK(worst > 0.0f && worst <= 0.02f);
    }

    // Concurrent predictions on one model equal the Rust API's.
    std::vector<std::thread> threads;
    std::vector<int> ok(4, 0);
    for (size_t t = 0; t < ok.size(); t++)
        threads.emplace_back([&, t] { ok[t] = matches(model.predict(c0.texts, options(c0)), c0); });
    for (auto &th : threads) th.join();
    for (int v : ok) CHECK(v);

    // Moves: a moved-from model fails cleanly; a prediction outlives its model.
    emcoder::Model moved = std::move(model);
    EXPECT_ERROR(EMCODER_ERR_INVALID_ARGUMENT, model.predict({"ok"}));  // NOLINT: use after move
    emcoder::Prediction kept = moved.predict(c0.texts, options(c0));
    { emcoder::Model gone = std::move(moved); }
    CHECK(matches(kept, c0));

    std::printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
