// CUDA inference of the pre-decoder CNN: bit-identical to qhil.kernels._model.reference_logits.
//
//   a_0    = x << act_bits                          x: the 0/1 (any uint8) input
//   acc_i  = bias_i + conv3d_same(a_i, W_i)         int64, zero padding, cross-correlation
//   a_i+1  = max(acc_i, 0) >> weight_bits           hidden layers (ReLU, then floor rescale)
//   logits = acc_last                               last layer: raw accumulators
//
// Why it is exact: every product and sum is done in unsigned 64-bit arithmetic, which wraps
// modulo 2**64 by definition (signed overflow would be undefined behaviour), so the result is
// the two's-complement int64 sum that NumPy's wrapping int64 arithmetic computes, in whatever
// order the terms are added. Converting back to signed is modular in nvcc/NVRTC and g++.
//
// Layouts (all buffers C-contiguous, no padding, no strides):
//   x       uint8 [B, c_in, T, H, W]      network input (c_in = 4)
//   act     int64 [B, c, T, H, W]         activations between layers
//   w       int32 [c_out, c_in, k, k, k]  one layer's weights, k odd
//   bias    int64 [c_out]
//   out     int64 [B, c_out, T, H, W]     activations, or logits for the last layer
//
// Entry points (extern "C", so CuPy RawModule / numba / the driver API find them unmangled):
//   qhil_conv3d_u8, qhil_conv3d_i64   one layer over a batch, one thread per output element
//   qhil_predecoder_forward           whole network, one block per shot (persistent style)
// The __host__ __device__ functions in namespace qhil are the building blocks for other
// kernels; qhil::predecoder_shot runs the network on one shot with the threads of one block.
//
// The file includes no headers so NVRTC compiles it without include paths.
// Built with -DQHIL_HOST_REFERENCE into a shared library (nvcc -shared), it also exports serial
// host emulations of the entry points (qhil_host_*: the kernel's arguments, then the grid and
// block sizes), so their arithmetic, indexing and argument lists are tested without a GPU.

namespace qhil {

typedef long long i64;
typedef unsigned long long u64;

// Activation loads as unsigned 64-bit: the input layer scales its uint8 by << act_bits.
__host__ __device__ inline u64 load(const unsigned char* __restrict__ p, i64 i, int shift) {
  return static_cast<u64>(p[i]) << shift;
}
__host__ __device__ inline u64 load(const i64* __restrict__ p, i64 i, int /*shift*/) {
  return static_cast<u64>(p[i]);
}

__host__ __device__ inline int imax(int a, int b) { return a > b ? a : b; }
__host__ __device__ inline int imin(int a, int b) { return a < b ? a : b; }

// The accumulator of output element (b, co, t, y, x): bias + same-padded cross-correlation.
// Taps that fall in the zero padding are skipped (their terms are zero).
template <typename In>
__host__ __device__ inline u64 conv_voxel(const In* __restrict__ in, int in_shift,
                                          const int* __restrict__ w, const i64* __restrict__ bias,
                                          int b, int co, int t, int y, int x, int c_in, int n_t,
                                          int n_h, int n_w, int k) {
  const int p = k / 2;
  // Tap ranges whose input index t + dt - p stays inside [0, n).
  const int t0 = imax(0, p - t), t1 = imin(k, n_t + p - t);
  const int y0 = imax(0, p - y), y1 = imin(k, n_h + p - y);
  const int x0 = imax(0, p - x), x1 = imin(k, n_w + p - x);
  const i64 plane = static_cast<i64>(n_h) * n_w;
  const i64 vol = plane * n_t;
  u64 acc = static_cast<u64>(bias[co]);
  for (int ci = 0; ci < c_in; ++ci) {
    const In* src = in + (static_cast<i64>(b) * c_in + ci) * vol;
    const int* wc = w + (static_cast<i64>(co) * c_in + ci) * k * k * k;
    for (int dt = t0; dt < t1; ++dt) {
      for (int dy = y0; dy < y1; ++dy) {
        const i64 row = (t + dt - p) * plane + static_cast<i64>(y + dy - p) * n_w + (x - p);
        const int* wr = wc + (dt * k + dy) * k;
        for (int dx = x0; dx < x1; ++dx) {
          // int32 weight -> int64 (sign-extended) -> u64: the product is the int64 one mod 2**64.
          acc += load(src, row + dx, in_shift) * static_cast<u64>(static_cast<i64>(wr[dx]));
        }
      }
    }
  }
  return acc;
}

// Hidden layers: ReLU, then arithmetic >> out_shift (on a non-negative value, i.e. floor).
// Last layer (relu == 0): the raw accumulator.
__host__ __device__ inline i64 epilogue(u64 acc, int relu, int out_shift) {
  const i64 v = static_cast<i64>(acc);
  if (!relu) return v;
  return v > 0 ? (v >> out_shift) : 0;
}

// One layer over n_b shots: output elements first, first + stride, ... of out (linear C order).
// Called by every thread of a grid (grid-stride loop) or of one block (block-stride loop).
template <typename In>
__host__ __device__ inline void conv3d_layer(const In* __restrict__ in, int in_shift,
                                             const int* __restrict__ w,
                                             const i64* __restrict__ bias, i64* __restrict__ out,
                                             int n_b, int c_in, int c_out, int n_t, int n_h,
                                             int n_w, int k, int relu, int out_shift, i64 first,
                                             i64 stride) {
  const i64 n = static_cast<i64>(n_b) * c_out * n_t * n_h * n_w;
  for (i64 i = first; i < n; i += stride) {
    i64 r = i;
    const int x = static_cast<int>(r % n_w);
    r /= n_w;
    const int y = static_cast<int>(r % n_h);
    r /= n_h;
    const int t = static_cast<int>(r % n_t);
    r /= n_t;
    const int co = static_cast<int>(r % c_out);
    const int b = static_cast<int>(r / c_out);
    const u64 acc = conv_voxel(in, in_shift, w, bias, b, co, t, y, x, c_in, n_t, n_h, n_w, k);
    out[i] = epilogue(acc, relu, out_shift);
  }
}

__host__ __device__ inline void block_sync() {
#ifdef __CUDA_ARCH__
  __syncthreads();
#endif
}

// Per-layer table for predecoder_shot: int64[n_layers][LAYER_FIELDS].
enum LayerField { L_C_IN = 0, L_C_OUT, L_K, L_W_OFFSET, L_B_OFFSET, LAYER_FIELDS };

// The whole network on ONE shot, run by all `size` threads of a block (`rank` = thread id).
// Every thread of the block must call it (it synchronizes between layers).
//   x       uint8 [4, T, H, W]          this shot's input
//   w_all   int32 concatenation of every layer's [c_out, c_in, k, k, k] weights
//   b_all   int64 concatenation of every layer's [c_out] biases
//   layers  int64 [n_layers][LAYER_FIELDS]: c_in, c_out, k, offset into w_all, into b_all
//   buf0, buf1  int64 [max hidden width * T * H * W] each, ping-pong scratch for activations
//   logits  int64 [4, T, H, W]
__host__ __device__ inline void predecoder_shot(const unsigned char* __restrict__ x,
                                                const int* __restrict__ w_all,
                                                const i64* __restrict__ b_all,
                                                const i64* __restrict__ layers, int n_layers,
                                                int n_t, int n_h, int n_w, int act_bits,
                                                int weight_bits, i64* buf0, i64* buf1,
                                                i64* __restrict__ logits, int rank, int size) {
  const i64* prev = nullptr;
  for (int l = 0; l < n_layers; ++l) {
    const i64* f = layers + static_cast<i64>(l) * LAYER_FIELDS;
    const int c_in = static_cast<int>(f[L_C_IN]), c_out = static_cast<int>(f[L_C_OUT]);
    const int k = static_cast<int>(f[L_K]);
    const int* w = w_all + f[L_W_OFFSET];
    const i64* bias = b_all + f[L_B_OFFSET];
    const int last = l == n_layers - 1;
    i64* out = last ? logits : (l % 2 == 0 ? buf0 : buf1);
    if (l == 0) {
      conv3d_layer(x, act_bits, w, bias, out, 1, c_in, c_out, n_t, n_h, n_w, k, !last,
                   weight_bits, rank, size);
    } else {
      conv3d_layer(prev, 0, w, bias, out, 1, c_in, c_out, n_t, n_h, n_w, k, !last, weight_bits,
                   rank, size);
    }
    // Also after the last layer: the next shot's first layer overwrites buf0.
    block_sync();
    prev = out;
  }
}

}  // namespace qhil

// ------------------------------------------------------------------------------ kernels

// One layer whose input is the uint8 network input, scaled by << in_shift (act_bits).
// Launch: any 1-D grid; grid-stride over the B * c_out * T * H * W outputs.
// relu != 0: hidden layer, out = max(acc, 0) >> out_shift; relu == 0: out = acc (logits).
extern "C" __global__ void qhil_conv3d_u8(const unsigned char* __restrict__ x, int in_shift,
                                          const int* __restrict__ w,
                                          const long long* __restrict__ bias,
                                          long long* __restrict__ out, int n_b, int c_in,
                                          int c_out, int n_t, int n_h, int n_w, int k, int relu,
                                          int out_shift) {
  const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  qhil::conv3d_layer(x, in_shift, w, bias, out, n_b, c_in, c_out, n_t, n_h, n_w, k, relu,
                     out_shift, first, stride);
}

// One layer whose input is int64 activations `a` [B, c_in, T, H, W]; otherwise as above.
extern "C" __global__ void qhil_conv3d_i64(const long long* __restrict__ a,
                                           const int* __restrict__ w,
                                           const long long* __restrict__ bias,
                                           long long* __restrict__ out, int n_b, int c_in,
                                           int c_out, int n_t, int n_h, int n_w, int k, int relu,
                                           int out_shift) {
  const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  qhil::conv3d_layer(a, 0, w, bias, out, n_b, c_in, c_out, n_t, n_h, n_w, k, relu, out_shift,
                     first, stride);
}

// The whole network in one launch: block j runs shots j, j + gridDim.x, ...
//   x        uint8 [B, 4, T, H, W]
//   w_all, b_all, layers: as for qhil::predecoder_shot
//   scratch  int64 [gridDim.x, 2, scratch_stride], scratch_stride >= max hidden width * T*H*W
//   logits   int64 [B, 4, T, H, W]
// Launch: 1-D grid of any size, any 1-D block size (all threads of a block share a shot).
extern "C" __global__ void qhil_predecoder_forward(
    const unsigned char* __restrict__ x, const int* __restrict__ w_all,
    const long long* __restrict__ b_all, const long long* __restrict__ layers, int n_layers,
    int n_b, int n_t, int n_h, int n_w, int act_bits, int weight_bits,
    long long* __restrict__ scratch, long long scratch_stride, long long* __restrict__ logits) {
  const long long vol = static_cast<long long>(n_t) * n_h * n_w;
  long long* buf0 = scratch + static_cast<long long>(blockIdx.x) * 2 * scratch_stride;
  long long* buf1 = buf0 + scratch_stride;
  for (int s = blockIdx.x; s < n_b; s += gridDim.x) {  // uniform per block: safe to sync
    qhil::predecoder_shot(x + s * 4 * vol, w_all, b_all, layers, n_layers, n_t, n_h, n_w,
                          act_bits, weight_bits, buf0, buf1, logits + s * 4 * vol,
                          static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x));
  }
}

#if defined(QHIL_HOST_REFERENCE) && !defined(__CUDACC_RTC__)
// Serial host emulations of the kernels, for exactness tests without a GPU: each takes its
// kernel's arguments, then the launch's grid and block sizes (1-D).

// Every thread (first = its global id, stride = grid * block) in turn.
extern "C" void qhil_host_conv3d_u8(const unsigned char* x, int in_shift, const int* w,
                                    const long long* bias, long long* out, int n_b, int c_in,
                                    int c_out, int n_t, int n_h, int n_w, int k, int relu,
                                    int out_shift, int grid, int block) {
  const long long threads = static_cast<long long>(grid) * block;
  for (long long g = 0; g < threads; ++g) {
    qhil::conv3d_layer(x, in_shift, w, bias, out, n_b, c_in, c_out, n_t, n_h, n_w, k, relu,
                       out_shift, g, threads);
  }
}

extern "C" void qhil_host_conv3d_i64(const long long* a, const int* w, const long long* bias,
                                     long long* out, int n_b, int c_in, int c_out, int n_t,
                                     int n_h, int n_w, int k, int relu, int out_shift, int grid,
                                     int block) {
  const long long threads = static_cast<long long>(grid) * block;
  for (long long g = 0; g < threads; ++g) {
    qhil::conv3d_layer(a, 0, w, bias, out, n_b, c_in, c_out, n_t, n_h, n_w, k, relu, out_shift,
                       g, threads);
  }
}

// Every block in turn, each as one thread (a block's threads only split a layer's outputs,
// and the barrier between layers is what running the layers in order gives).
extern "C" void qhil_host_predecoder_forward(const unsigned char* x, const int* w_all,
                                             const long long* b_all, const long long* layers,
                                             int n_layers, int n_b, int n_t, int n_h, int n_w,
                                             int act_bits, int weight_bits, long long* scratch,
                                             long long scratch_stride, long long* logits,
                                             int grid, int /*block*/) {
  const long long vol = static_cast<long long>(n_t) * n_h * n_w;
  for (int j = 0; j < grid; ++j) {
    long long* buf0 = scratch + static_cast<long long>(j) * 2 * scratch_stride;
    for (int s = j; s < n_b; s += grid) {
      qhil::predecoder_shot(x + s * 4 * vol, w_all, b_all, layers, n_layers, n_t, n_h, n_w,
                            act_bits, weight_bits, buf0, buf0 + scratch_stride,
                            logits + s * 4 * vol, 0, 1);
    }
  }
}
#endif
