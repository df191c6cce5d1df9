// Memory probe for the long-sequence access pattern (benchmarks/NOTES.md, "The long-T forward:
// shorter arithmetic, deeper ring, a memory probe"): each thread walks T rows of one vector of
// adjacent elements (row stride = the row's bytes), loading row t + U while storing row t, with
// no arithmetic. Prints the copy rate of each variant: element width
// per thread, prefetch depth U, block size, and blocks whose warps are kept in step.
//   nvcc -O3 -arch=sm_90 benchmarks/memory_walk.cu -o /tmp/memory_walk && /tmp/memory_walk
#include <cstdio>
#include <cstdint>
// kSync: the warps of a block synchronize every U rows, so that their pieces of a row are written
// close together in time (threads past the end then stay for the barriers, touching nothing).
template <typename V, int U, bool kSync>
__global__ void walk(const V* __restrict__ x, V* __restrict__ y, int T, int64_t nvec) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const bool active = i < nvec;
  if (!kSync && !active) return;
  V buf[U];
#pragma unroll
  for (int u = 0; u < U; ++u) if (active) buf[u] = __ldcs(x + (int64_t)u * nvec + i);
  for (int t0 = 0; t0 < T; t0 += U) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (!active) continue;
      V v = buf[u];
      int tn = t0 + U + u;
      if (tn < T) buf[u] = __ldcs(x + (int64_t)tn * nvec + i);
      __stcs(y + (int64_t)(t0 + u) * nvec + i, v);
    }
    if constexpr (kSync) __syncthreads();
  }
}
template <typename V, int U>
void run(const char* name, void* x, void* y, int T, int64_t bytes_per_row, int block, bool sync) {
  int64_t nvec = bytes_per_row / sizeof(V);
  int grid = (nvec + block - 1) / block;
  cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
  for (int r = 0; r < 3; ++r) sync ? walk<V, U, true><<<grid, block>>>((V*)x, (V*)y, T, nvec) : walk<V, U, false><<<grid, block>>>((V*)x, (V*)y, T, nvec);
  cudaEventRecord(a);
  for (int r = 0; r < 20; ++r) sync ? walk<V, U, true><<<grid, block>>>((V*)x, (V*)y, T, nvec) : walk<V, U, false><<<grid, block>>>((V*)x, (V*)y, T, nvec);
  cudaEventRecord(b); cudaEventSynchronize(b);
  float ms; cudaEventElapsedTime(&ms, a, b); ms /= 20;
  printf("%-10s vec %2dB U %2d block %4d %s threads %7lld  T %5d row %6lld B: %7.2f us %6.0f GB/s %s\n", name, (int)sizeof(V), U, block, sync ? "sync" : "    ",
         (long long)nvec, T, (long long)bytes_per_row, ms * 1e3, 2.0 * T * bytes_per_row / (ms * 1e-3) / 1e9, cudaGetErrorString(cudaGetLastError()));
}
int main() {
  void *x, *y; size_t total = 256 << 20;
  cudaMalloc(&x, total); cudaMalloc(&y, total); cudaMemset(x, 0, total);
  struct S { int T; int64_t row; } shapes[] = {{1024, 16384 * 4}, {1024, 16384 * 2}, {256, 65536 * 4}, {256, 65536 * 2}};
  for (auto s : shapes) {
    run<float, 8>("f32x1", x, y, s.T, s.row, 32, false);
    run<float, 32>("f32x1", x, y, s.T, s.row, 32, false);
    run<short, 32>("16bx1", x, y, s.T, s.row, 32, false);
    run<float2, 16>("x2", x, y, s.T, s.row, 32, false);
    run<float4, 8>("x4", x, y, s.T, s.row, 32, false);
    run<float4, 8>("x4", x, y, s.T, s.row, 64, false);
    run<float, 16>("f32x1", x, y, s.T, s.row, 128, true);
    run<float4, 8>("x4", x, y, s.T, s.row, 128, true);
  }
}
