// emcoder.hpp - header-only C++20 RAII wrapper over the C API of libemcoder (emcoder.h).
//
//   emcoder::Model model("tests/fixtures/tiny-vocab-bf16");
//   emcoder::Prediction p = model.predict({"I am so happy you are here!"}, {.n_samples = 20});
//   for (size_t i = 0; i < p.num_labels(); i++)
//       std::cout << model.label(i) << ' ' << p.labels(0)[i].mean << '\n';
//
// Errors are thrown as emcoder::Error (a std::runtime_error carrying the EMCODER_ERR_* code);
// out-of-range indexes throw std::out_of_range. Ownership is RAII: Model and Prediction are
// move-only and free their handle in their destructor; a Prediction owns its data and may
// outlive its Model. Thread safety: a Model is immutable; call predict() on one Model from any
// number of threads at once. Requires C++20 (std::span, concepts); tested with g++ 12.
#pragma once

#include "emcoder.h"

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace emcoder {

/// An error of libemcoder: the EMCODER_ERR_* code and the library's message.
class Error : public std::runtime_error {
public:
    Error(int32_t code, const std::string &message) : std::runtime_error(message), code_(code) {}
    /// The EMCODER_ERR_* code (negative).
    int32_t code() const noexcept { return code_; }
    /// The name of the code, e.g. "EMCODER_ERR_IO".
    std::string_view code_name() const noexcept { return emcoder_error_code_name(code_); }

private:
    int32_t code_;
};

namespace detail {

/// Throws the error of a failed call and frees the C error object.
[[noreturn]] inline void throw_error(int32_t code, EmcoderError *err) {
    std::string message = emcoder_error_message(err);
    emcoder_error_free(err);
    throw Error(code, message);
}

inline void check(int32_t code, EmcoderError *err) {
    if (code != EMCODER_OK) throw_error(code, err);
}

struct ModelDeleter {
    void operator()(EmcoderModel *m) const noexcept { emcoder_model_free(m); }
};
struct PredictionDeleter {
    void operator()(EmcoderPrediction *p) const noexcept { emcoder_prediction_free(p); }
};

}  // namespace detail

/// Throws emcoder::Error unless the loaded library speaks the ABI of this header.
inline void check_abi() {
    if (emcoder_abi_version() != EMCODER_ABI_VERSION)
        throw Error(EMCODER_ERR_INTERNAL,
                    "libemcoder has ABI version " + std::to_string(emcoder_abi_version()) +
                        " but emcoder.h is version " + std::to_string(EMCODER_ABI_VERSION) +
                        ": rebuild against the installed library");
}

/// How to load a model (see EmcoderModelParams in emcoder.h; every 0 means the default).
struct ModelParams {
    std::string tokenizer_path;  ///< empty: <dir>/tokenizer.json, else the built-in tokenizer
    uint32_t n_threads = 0;      ///< worker threads; 0: all cores
    uint32_t max_tokens = 0;     ///< longest text in tokens; 0: 4096
    uint32_t max_rows = 0;       ///< rows computed at once (memory bound); 0: default
    uint32_t device = EMCODER_DEVICE_CPU;  ///< only the CPU in this build
};

/// How to predict (see EmcoderPredictOptions in emcoder.h).
struct PredictOptions {
    uint32_t n_samples = EMCODER_DEFAULT_SAMPLES;  ///< MC samples; 0: one deterministic pass
    uint64_t seed = EMCODER_DEFAULT_SEED;          ///< seed of the dropout masks
    bool truncate = false;                         ///< cut texts over max_tokens instead of failing
};

/// The results of one predict() call. Move-only; owns its data.
class Prediction {
public:
    /// An empty prediction (no texts).
    Prediction() = default;
    /// Takes ownership of a C prediction.
    explicit Prediction(EmcoderPrediction *p) noexcept : p_(p) {}

    /// Texts predicted.
    size_t num_texts() const noexcept { return emcoder_prediction_num_texts(p_.get()); }
    /// Labels per text (0 for an empty prediction).
    size_t num_labels() const noexcept { return emcoder_prediction_num_labels(p_.get()); }
    /// Tokens of text `text`, [CLS] and [SEP] included.
    size_t n_tokens(size_t text) const { return emcoder_prediction_n_tokens(p_.get(), index(text)); }
    /// MC samples drawn for text `text` (0: deterministic pass).
    uint32_t n_samples(size_t text) const {
        return emcoder_prediction_n_samples(p_.get(), index(text));
    }
    /// Statistics of text `text`, one per label in label-id order; valid while *this lives.
    std::span<const EmcoderLabelStats> labels(size_t text) const {
        return {emcoder_prediction_labels(p_.get(), index(text)), num_labels()};
    }
    /// Logits of text `text` for a deterministic prediction; empty for an MC prediction.
    std::span<const float> logits(size_t text) const {
        const float *z = emcoder_prediction_logits(p_.get(), index(text));
        return z ? std::span<const float>(z, num_labels()) : std::span<const float>();
    }
    /// The C handle (still owned by *this).
    const EmcoderPrediction *get() const noexcept { return p_.get(); }

private:
    size_t index(size_t text) const {
        if (text >= num_texts())
            throw std::out_of_range("emcoder::Prediction: text index " + std::to_string(text) +
                                    " >= " + std::to_string(num_texts()));
        return text;
    }
    std::unique_ptr<EmcoderPrediction, detail::PredictionDeleter> p_;
};

/// A loaded model. Move-only; immutable, so predict() may run on many threads at once.
class Model {
public:
    /// Loads the model directory `dir`; throws emcoder::Error.
    explicit Model(std::string_view dir, const ModelParams &params = {}) {
        check_abi();
        EmcoderModelParams p = emcoder_model_default_params();
        if (!params.tokenizer_path.empty()) p.tokenizer_path = params.tokenizer_path.c_str();
        p.n_threads = params.n_threads;
        if (params.max_tokens) p.max_tokens = params.max_tokens;
        if (params.max_rows) p.max_rows = params.max_rows;
        p.device = params.device;
        const std::string d(dir);
        EmcoderModel *m = nullptr;
        EmcoderError *err = nullptr;
        // Two statements: `err` must be read after the call has set it.
        const int32_t code = emcoder_model_load(d.c_str(), &p, &m, &err);
        detail::check(code, err);
        m_.reset(m);
    }

    /// Labels per text (28 for EmCoder).
    size_t num_labels() const noexcept { return emcoder_model_num_labels(m_.get()); }
    /// Name of label `i`; throws std::out_of_range.
    std::string_view label(size_t i) const {
        const char *l = emcoder_model_label(m_.get(), i);
        if (!l) throw std::out_of_range("emcoder::Model: label index " + std::to_string(i));
        return l;
    }
    /// Every label name, in id order (views valid while *this lives).
    std::vector<std::string_view> labels() const {
        std::vector<std::string_view> out;
        for (size_t i = 0; i < num_labels(); i++) out.push_back(label(i));
        return out;
    }
    /// Worker threads of the model's pool.
    uint32_t n_threads() const noexcept { return emcoder_model_n_threads(m_.get()); }

    /// Predicts `texts` (UTF-8). An empty input gives an empty Prediction. Throws
    /// emcoder::Error (a text containing a NUL byte is EMCODER_ERR_INVALID_ARGUMENT).
    Prediction predict(std::span<const std::string_view> texts,
                       const PredictOptions &options = {}) const {
        if (texts.empty()) return Prediction();
        std::vector<std::string> owned;  // NUL-terminated copies
        std::vector<const char *> ptrs;
        owned.reserve(texts.size());
        ptrs.reserve(texts.size());
        for (size_t i = 0; i < texts.size(); i++) {
            if (texts[i].find('\0') != std::string_view::npos)
                throw Error(EMCODER_ERR_INVALID_ARGUMENT,
                            "text " + std::to_string(i) + " contains a NUL byte");
            ptrs.push_back(owned.emplace_back(texts[i]).c_str());
        }
        EmcoderPredictOptions o = emcoder_predict_default_options();
        o.n_samples = options.n_samples;
        o.seed = options.seed;
        o.truncate = options.truncate ? 1 : 0;
        EmcoderPrediction *p = nullptr;
        EmcoderError *err = nullptr;
        const int32_t code = emcoder_predict(m_.get(), ptrs.data(), ptrs.size(), &o, &p, &err);
        detail::check(code, err);
        return Prediction(p);
    }

    /// predict() over a braced list: model.predict({"a", "b"}).
    Prediction predict(std::initializer_list<std::string_view> texts,
                       const PredictOptions &options = {}) const {
        return predict(std::span<const std::string_view>(texts.begin(), texts.size()), options);
    }

    /// predict() over any range of string-like values (std::vector<std::string>, ...).
    template <std::ranges::input_range R>
        requires std::convertible_to<std::ranges::range_reference_t<R>, std::string_view>
    Prediction predict(const R &texts, const PredictOptions &options = {}) const {
        std::vector<std::string_view> views;
        for (auto &&t : texts) views.emplace_back(t);
        return predict(std::span<const std::string_view>(views), options);
    }

    /// The C handle (still owned by *this).
    const EmcoderModel *get() const noexcept { return m_.get(); }

private:
    std::unique_ptr<EmcoderModel, detail::ModelDeleter> m_;
};

}  // namespace emcoder
