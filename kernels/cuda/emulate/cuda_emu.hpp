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
#include <cstring>
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

inline void __syncthreads() { emu_barrier->arrive_and_wait(); }
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
// __global__ function with its arguments bound).
template <class F>
void emu_launch(dim3 grid, dim3 block, F kernel) {
    gridDim = grid;
    blockDim = block;
    const unsigned int n = block.x * block.y * block.z;
    for (unsigned int bz = 0; bz < grid.z; ++bz)
        for (unsigned int by = 0; by < grid.y; ++by)
            for (unsigned int bx = 0; bx < grid.x; ++bx) {
                blockIdx = dim3(bx, by, bz);
                std::barrier<> bar(n);
                emu_barrier = &bar;
                std::vector<std::thread> threads;
                threads.reserve(n);
                for (unsigned int t = 0; t < n; ++t)
                    threads.emplace_back([&, t] {
                        threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        kernel();
                        // A thread that has exited no longer takes part in __syncthreads.
                        emu_barrier->arrive_and_drop();
                    });
                for (auto& th : threads) th.join();
            }
}
