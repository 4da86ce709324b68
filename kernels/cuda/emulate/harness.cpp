// Runs one kernel of kernels/cuda/emcoder.cu on the CPU emulation (cuda_emu.hpp) for the
// kernels' tests (tests/kernels/cuda_emulated.rs). Input on stdin, one token stream:
//   <kernel name> <grid x y z> <block x y z> <argument count> <arguments...>
// where an argument is `b32 N w1..wN` (a buffer of 32-bit words: f32 bits, u32, i32),
// `b16 N w1..wN` (a buffer of 16-bit words: bf16), `ref J OFF` (a pointer OFF elements
// into the buffer of argument J < this one: the same memory, as when a kernel runs in place),
// `null` (a null pointer) or `s V` (a scalar: V is the bits, read as the parameter's type:
// int, unsigned, float, long long), every number in hexadecimal. Output: one line per argument, `b32 N w1..wN` / `b16 ...`
// with the buffer's contents after the kernel, `-` for the others.
#include "cuda_emu.hpp"
#include "../emcoder.cu"

#include <cstdio>
#include <iostream>
#include <string>

struct Arg {
    std::string kind;
    std::vector<uint32_t> w32;
    std::vector<uint16_t> w16;
    uint64_t bits = 0;
    size_t ref = 0, off = 0;
};
static std::vector<Arg> args;

template <class T>
static T* P(size_t i) {
    Arg& a = args.at(i);
    if (a.kind == "null") return nullptr;
    if (a.kind == "ref") return P<T>(a.ref) + a.off;
    if (a.kind == "b16") return reinterpret_cast<T*>(a.w16.data());
    return reinterpret_cast<T*>(a.w32.data());
}
static int SI(size_t i) { return (int)(uint32_t)args.at(i).bits; }
static unsigned int SU(size_t i) { return (uint32_t)args.at(i).bits; }
static long long SL(size_t i) { return (long long)args.at(i).bits; }
static float SF(size_t i) { return __uint_as_float((uint32_t)args.at(i).bits); }

int main() {
    std::string name;
    dim3 grid, block;
    size_t n;
    std::cin >> name >> grid.x >> grid.y >> grid.z >> block.x >> block.y >> block.z >> n;
    std::cin >> std::hex;
    for (size_t i = 0; i < n; ++i) {
        Arg a;
        std::cin >> a.kind;
        size_t count;
        if (a.kind == "b32") {
            std::cin >> count;
            a.w32.resize(count);
            for (auto& w : a.w32) std::cin >> w;
        } else if (a.kind == "b16") {
            std::cin >> count;
            a.w16.resize(count);
            for (auto& w : a.w16) std::cin >> w;
        } else if (a.kind == "s") {
            std::cin >> a.bits;
        } else if (a.kind == "ref") {
            std::cin >> a.ref >> a.off;
            if (a.ref >= i || args[a.ref].kind == "ref") {
                std::fprintf(stderr, "argument %zu refers to argument %zu\n", i, a.ref);
                return 2;
            }
        } else if (a.kind != "null") {
            std::fprintf(stderr, "unknown argument kind %s\n", a.kind.c_str());
            return 2;
        }
        args.push_back(std::move(a));
    }
    if (!std::cin) {
        std::fprintf(stderr, "malformed input\n");
        return 2;
    }
    // The kernels that use __syncthreads.
    const bool barriers = name == "rmsnorm" || name == "attention";
#define K(kernel, ...) \
    if (name == #kernel) return emu_launch(grid, block, [&] { kernel(__VA_ARGS__); }, barriers), print(), 0;
    auto print = [] {
        for (auto& a : args) {
            if (a.kind == "b32") {
                std::printf("b32 %zx", a.w32.size());
                for (auto w : a.w32) std::printf(" %x", w);
            } else if (a.kind == "b16") {
                std::printf("b16 %zx", a.w16.size());
                for (auto w : a.w16) std::printf(" %x", (unsigned)w);
            } else {
                std::printf("-");
            }
            std::printf("\n");
        }
    };
    K(philox_words, P<unsigned>(0), P<unsigned>(1), SI(2), SU(3), SU(4))
    K(dropout_residual_add, P<float>(0), P<float>(1), P<unsigned>(2), P<unsigned>(3), SI(4), SI(5), SI(6),
      SI(7), SU(8), SU(9), SU(10), SU(11), SF(12), SI(13))
    K(dropout_inplace, P<float>(0), P<unsigned>(1), SI(2), SI(3), SU(4), SU(5), SU(6), SU(7), SF(8))
    K(gather_rows, P<float>(0), P<float>(1), P<unsigned>(2), SI(3), SI(4))
    K(gather_rows_bf16, P<float>(0), P<unsigned short>(1), P<unsigned>(2), SI(3), SI(4))
    K(f32_to_bf16, P<unsigned short>(0), P<float>(1), SL(2))
    K(rmsnorm, P<float>(0), P<float>(1), P<float>(2), SI(3), SI(4), SF(5))
    K(rope, P<float>(0), P<unsigned>(1), P<float>(2), SI(3), SI(4), SI(5), SI(6), SI(7), SI(8))
    K(attention, P<float>(0), P<float>(1), P<int>(2), SI(3), SI(4), SI(5), SI(6), SI(7), SI(8))
    K(swiglu, P<float>(0), P<float>(1), SI(2), SI(3), SI(4), SI(5), SI(6))
    K(bias_act, P<float>(0), P<float>(1), SI(2), SI(3), SI(4))
    K(mean_pool, P<float>(0), P<float>(1), P<int>(2), SI(3), SI(4))
    K(label_stats, P<float>(0), P<float>(1), SI(2), SI(3), SI(4))
    std::fprintf(stderr, "unknown kernel %s\n", name.c_str());
    return 2;
}
