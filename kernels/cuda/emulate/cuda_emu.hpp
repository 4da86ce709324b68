// A CPU emulation of the parts of CUDA C that kernels/cuda/emcoder.cu uses, so that the
// kernels' tests can run that very source against the Rust scalar references on machines
// without a GPU (CI). Not a performance tool: the blocks of a grid run one after another,
// the threads of a block as OS threads meeting at a barrier for __syncthreads; __shared__
// arrays are function statics, which the threads of the one running block share. What it
// cannot show: races between blocks (the kernels have none: no atomics, each block writes
// its own rows), warp-level behaviour (the kernels use none), and the GPU's math library
// (expf, erff, cosf are the host's; the tests' tolerances cover that).
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

struct dim3 {
    unsigned int x, y, z;
    dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx;
inline dim3 blockIdx, blockDim, gridDim;
inline std::barrier<>* emu_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static

inline void __syncthreads() {
    if (!emu_barrier) {
        std::fprintf(stderr, "__syncthreads in a kernel launched without barriers (harness.cpp's list)\n");
        std::abort();
    }
    emu_barrier->arrive_and_wait();
}
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((uint64_t)a * b) >> 32);
}
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}

// Runs `kernel` over `grid` x `block` (kernel: a callable with no arguments that calls the
// __global__ function with its arguments bound). Kernels that use __syncthreads need
// `barriers`: then a team of blockDim OS threads runs the blocks one after another, meeting
// at a team barrier between blocks, with a fresh block barrier per block (a thread that
// returns early drops out of it, as an exited thread no longer counts on a GPU). Without
// barriers, one thread runs every thread of every block in turn (much faster; a
// __syncthreads there fails loudly).
template <class F>
void emu_launch(dim3 grid, dim3 block, F kernel, bool barriers) {
    gridDim = grid;
    blockDim = block;
    const unsigned int n = block.x * block.y * block.z;
    auto set_thread = [&](unsigned int t) {
        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
    };
    auto set_block = [&](unsigned long long b) {
        blockIdx = dim3(b % grid.x, (b / grid.x) % grid.y, b / ((unsigned long long)grid.x * grid.y));
    };
    const unsigned long long n_blocks = (unsigned long long)grid.x * grid.y * grid.z;
    if (!barriers) {
        emu_barrier = nullptr;
        for (unsigned long long b = 0; b < n_blocks; ++b) {
            set_block(b);
            for (unsigned int t = 0; t < n; ++t) {
                set_thread(t);
                kernel();
            }
        }
        return;
    }
    std::barrier<> team(n);
    std::optional<std::barrier<>> block_barrier;
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned int t = 0; t < n; ++t)
        threads.emplace_back([&, t] {
            set_thread(t);
            for (unsigned long long b = 0; b < n_blocks; ++b) {
                if (t == 0) {
                    set_block(b);
                    block_barrier.emplace(n);
                    emu_barrier = &*block_barrier;
                }
                team.arrive_and_wait();  // the block's index and barrier are set
                kernel();
                emu_barrier->arrive_and_drop();
                team.arrive_and_wait();  // every thread is done with the block
            }
        });
    for (auto& th : threads) th.join();
}
