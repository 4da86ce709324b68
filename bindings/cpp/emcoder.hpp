// emcoder.hpp - header-only C++20 RAII wrapper over the C API of libemcoder (emcoder.h).
//
//   emcoder::Model model("tests/fixtures/tiny-vocab-bf16");
//   emcoder::Prediction p = model.predict({"I am so happy you are here!"}, {.n_samples = 20});
//   for (size_t i = 0; i < p.num_labels(); i++)
//       std::cout << model.label(i) << ' ' << p.labels(0)[i].mean << '\n';
//
//   emcoder::CancelToken stop;                       // stop.cancel() from any thread
//   model.predict(texts, {.cancel = &stop, .timeout = std::chrono::milliseconds(500)});
//
//   // Stop each text's sampling once its decisions are settled at error rate 0.01:
//   emcoder::Prediction d = model.predict(texts, {.decision_error = 0.01});
//   d.n_samples(0);                                  // samples that text drew (<= 50)
//
// Errors are thrown as emcoder::Error (a std::runtime_error carrying the EMCODER_ERR_* code;
// a cancelled or timed-out call is EMCODER_ERR_CANCELLED); out-of-range indexes throw
// std::out_of_range. Texts are passed to the library as (pointer, length) pairs: no copies, no
// terminators needed. Ownership is RAII: Model and Prediction are move-only and free their
// handle in their destructor; a Prediction owns its data and may outlive its Model. Thread
// safety: a Model is immutable; call predict() on one Model from any number of threads at once.
// Requires C++20 (std::span, std::atomic_ref, concepts); tested with g++ 12.
#pragma once

#include "emcoder.h"

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
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

/// Throws emcoder::Error unless the loaded library serves the ABI of this header (a newer
/// library serves older headers: the structs only grow).
inline void check_abi() {
    if (emcoder_abi_version() < EMCODER_ABI_VERSION)
        throw Error(EMCODER_ERR_INTERNAL,
                    "libemcoder has ABI version " + std::to_string(emcoder_abi_version()) +
                        " but emcoder.h is version " + std::to_string(EMCODER_ABI_VERSION) +
                        ": install a newer libemcoder or build against its header");
}

/// How to load a model (see EmcoderModelParams in emcoder.h; every 0 means the default).
struct ModelParams {
    std::string tokenizer_path;  ///< empty: <dir>/tokenizer.json, else the built-in tokenizer
    uint32_t n_threads = 0;      ///< worker threads; 0: all cores
    uint32_t max_tokens = 0;     ///< longest text in tokens; 0: 4096
    uint32_t max_rows = 0;       ///< rows computed at once (bounds scratch); 0: default
    uint32_t device = EMCODER_DEVICE_CPU;  ///< or EMCODER_DEVICE_CUDA (GPU device_index)
    /// EMCODER_PRECISION_F32, EMCODER_PRECISION_BF16 or EMCODER_PRECISION_INT8 (ABI 5, CPU only)
    uint32_t precision = EMCODER_PRECISION_F32;
    uint64_t memory_budget = 0;  ///< bytes of scratch for all running calls; 0: 2 x scratch_bound
    std::string isa;             ///< kernel level ("generic", "avx2", ...); empty: best / $EMCODER_ISA
    bool copy_weights = false;   ///< read the weights into memory instead of mapping the file
    bool refuse_non_finite = false;  ///< fail to load weights holding NaN or infinity
    uint64_t device_index = 0;       ///< with EMCODER_DEVICE_CUDA: the GPU's number (ABI 4)
};

/// A cancellation flag: pass its address in PredictOptions::cancel, call cancel() from any
/// thread, and the calls given it throw emcoder::Error(EMCODER_ERR_CANCELLED) within about one
/// layer's work. Neither copyable nor movable (the library reads it where it is); reset()
/// before reusing it.
class CancelToken {
public:
    CancelToken() = default;
    CancelToken(const CancelToken &) = delete;
    CancelToken &operator=(const CancelToken &) = delete;

    /// Stops the calls that use this token.
    void cancel() noexcept { std::atomic_ref<int32_t>(flag_).store(1, std::memory_order_relaxed); }
    /// Clears the flag, for the next calls.
    void reset() noexcept { std::atomic_ref<int32_t>(flag_).store(0, std::memory_order_relaxed); }
    /// Whether cancel() was called (since the last reset()).
    bool cancelled() const noexcept {
        return std::atomic_ref<int32_t>(flag_).load(std::memory_order_relaxed) != 0;
    }
    /// The flag for EmcoderPredictOptions::cancel.
    const EmcoderCancelFlag *flag() const noexcept { return &flag_; }

private:
    alignas(std::atomic_ref<int32_t>::required_alignment) mutable int32_t flag_ = 0;
};

/// How to predict (see EmcoderPredictOptions in emcoder.h).
struct PredictOptions {
    uint32_t n_samples = EMCODER_DEFAULT_SAMPLES;  ///< MC samples; 0: one deterministic pass
    uint64_t seed = EMCODER_DEFAULT_SEED;          ///< seed of the dropout masks
    bool truncate = false;                         ///< cut texts over max_tokens instead of failing
    const CancelToken *cancel = nullptr;           ///< stops the call when cancelled
    std::chrono::milliseconds timeout{0};          ///< stops the call after this; 0: no limit
    bool fail_fast_on_memory = false;  ///< fail at once while the memory budget is taken
    /// Adaptive sampling: stop a text once every label's mean has a standard error below this
    /// (blocks of 10, at most n_samples; Prediction::n_samples() tells how many were drawn);
    /// 0: off. See EmcoderPredictOptions::tolerance. Negative or non-finite values, or both
    /// tolerance and decision_error set, throw EMCODER_ERR_INVALID_ARGUMENT.
    float tolerance = 0.0f;
    /// Sampling that stops on decisions (ABI 3): stop a text once every label's thresholded
    /// decision is settled at this error rate (in (0, 1), e.g. 0.01; at most n_samples, and
    /// Prediction::n_samples() tells how many were drawn); 0: off. See
    /// EmcoderPredictOptions::decision_error. Other values throw EMCODER_ERR_INVALID_ARGUMENT.
    double decision_error = 0.0;
};

namespace detail {

using LogFn = std::function<void(int32_t level, std::string_view message)>;

/// Calls the C++ log function; nothing may unwind into the library.
inline void log_trampoline(int32_t level, const char *message, void *user) {
    try {
        (*static_cast<LogFn *>(user))(level, message);
    } catch (...) {
    }
}

}  // namespace detail

/// Sets the process-wide log function (nullptr removes it): `fn(level, message)` for messages of
/// `min_level` (EMCODER_LOG_DEBUG/INFO/WARN) and above, called from any thread, possibly at once
/// (make it thread-safe); it must not call into libemcoder. Exceptions it throws are dropped.
/// Throws emcoder::Error for an unknown level.
inline void set_log_callback(detail::LogFn fn, int32_t min_level = EMCODER_LOG_INFO) {
    static std::mutex mu;
    static std::unique_ptr<detail::LogFn> current;
    std::lock_guard<std::mutex> lock(mu);
    auto next = fn ? std::make_unique<detail::LogFn>(std::move(fn)) : nullptr;
    const int32_t code = emcoder_set_log_callback(next ? &detail::log_trampoline : nullptr,
                                                  next.get(), min_level);
    if (code != EMCODER_OK)
        throw Error(code, "emcoder_set_log_callback: level " + std::to_string(min_level) +
                              " is not one of EMCODER_LOG_DEBUG/INFO/WARN");
    // The library has stopped calling the previous function: it can go.
    current = std::move(next);
}

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
    /// MC samples drawn for text `text` (0: deterministic pass; with decision_error, those it
    /// drew before its decisions settled).
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
        p.precision = params.precision;
        p.memory_budget = params.memory_budget;
        if (!params.isa.empty()) p.isa = params.isa.c_str();
        p.copy_weights = params.copy_weights ? 1 : 0;
        p.refuse_non_finite = params.refuse_non_finite ? 1 : 0;
        p.device_index = params.device_index;
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
    /// The most scratch memory one call can use, in bytes (emcoder_model_scratch_bound).
    uint64_t scratch_bound() const noexcept { return emcoder_model_scratch_bound(m_.get()); }
    /// The scratch memory budget of all running calls, in bytes.
    uint64_t memory_budget() const noexcept { return emcoder_model_memory_budget(m_.get()); }
    /// The instruction-set level of the kernels, e.g. "avx2" (empty for a moved-from model).
    std::string_view isa() const noexcept {
        const char *s = emcoder_model_isa(m_.get());
        return s ? s : "";
    }

    /// Predicts `texts` (UTF-8), passed as (pointer, length) pairs without copies. An empty
    /// input gives an empty Prediction. Throws emcoder::Error: a text containing a NUL byte is
    /// EMCODER_ERR_INVALID_ARGUMENT, a cancelled or timed-out call EMCODER_ERR_CANCELLED.
    Prediction predict(std::span<const std::string_view> texts,
                       const PredictOptions &options = {}) const {
        if (texts.empty()) return Prediction();
        std::vector<EmcoderText> views(texts.size());
        for (size_t i = 0; i < texts.size(); i++) views[i] = {texts[i].data(), texts[i].size()};
        EmcoderPredictOptions o = emcoder_predict_default_options();
        o.n_samples = options.n_samples;
        o.seed = options.seed;
        o.truncate = options.truncate ? 1 : 0;
        o.cancel = options.cancel ? options.cancel->flag() : nullptr;
        // A negative timeout is already over (1 ms); 0 is none.
        const auto ms = options.timeout.count();
        o.timeout_ms = ms == 0 ? 0 : ms < 0 ? 1 : static_cast<uint64_t>(ms);
        o.fail_fast_on_memory = options.fail_fast_on_memory ? 1 : 0;
        o.tolerance = options.tolerance;
        o.decision_error = options.decision_error;
        EmcoderPrediction *p = nullptr;
        EmcoderError *err = nullptr;
        const int32_t code =
            emcoder_predict_texts(m_.get(), views.data(), views.size(), &o, &p, &err);
        detail::check(code, err);
        return Prediction(p);
    }

    /// predict() over a braced list: model.predict({"a", "b"}).
    Prediction predict(std::initializer_list<std::string_view> texts,
                       const PredictOptions &options = {}) const {
        return predict(std::span<const std::string_view>(texts.begin(), texts.size()), options);
    }

    /// predict() over any range of string-like values (std::vector<std::string>, ...): views
    /// of its elements, no copies (a range that yields temporaries is copied first, so that
    /// no view dangles).
    template <std::ranges::input_range R>
        requires std::convertible_to<std::ranges::range_reference_t<const R>, std::string_view>
    Prediction predict(const R &texts, const PredictOptions &options = {}) const {
        using Ref = std::ranges::range_reference_t<const R>;
        constexpr bool borrowed = std::is_lvalue_reference_v<Ref> ||
                                  std::is_same_v<std::remove_cvref_t<Ref>, std::string_view> ||
                                  std::is_pointer_v<std::remove_cvref_t<Ref>>;
        std::vector<std::string> owned;
        std::vector<std::string_view> views;
        for (auto &&t : texts) {
            if constexpr (borrowed)
                views.emplace_back(t);
            else
                owned.emplace_back(std::string_view(t));
        }
        if constexpr (!borrowed) views.assign(owned.begin(), owned.end());
        return predict(std::span<const std::string_view>(views), options);
    }

    /// The C handle (still owned by *this).
    const EmcoderModel *get() const noexcept { return m_.get(); }

private:
    std::unique_ptr<EmcoderModel, detail::ModelDeleter> m_;
};

}  // namespace emcoder
