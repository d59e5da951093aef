// sslax's CPU convolution kernels (2-D, NHWC x HWIO, float32), as XLA FFI handlers.
//
// SslaxConvWeightGrad, the weight gradient:
// dw[a, b, ci, co] = sum over (n, i, j) of x[n, i*sh + a - pt, j*sw + b - pl, ci] * g[n, i, j, co]
// with x zero outside the image. For a fixed kernel row a and one padded input row, the
// kw*Cin values that output pixel j multiplies (over b and ci) lie contiguously at
// xp[j*sw*Cin ...], so dw[a] (kw*Cin x Cout) is a GEMM whose contraction runs over every
// output pixel: each register block of dw (MR rows x NV vectors of Cout) is accumulated over
// a whole batch chunk of pixels before it is stored, and the chunk (padded input and output
// gradient) is sized to stay in the core's L2 cache (`chunk_bytes`). No im2col matrix is ever
// built; that copy, and XLA-CPU's dot at these K-dominant shapes, are what made the weight
// gradients the slowest part of a CPU step (BENCHMARKS.md, issue 13).
//
// SslaxConvForward, the convolution itself (and, called on the output gradient with the
// flipped kernel, the input gradient of an unstrided one): the same rows, read per output
// pixel (below, "The forward convolution").
//
// Threads: `threads` parts run on XLA's intra-op thread pool (whole tiles of dw, or whole
// images of y, per part); sslax asks for the cores per XLA device (one, with its default of
// one device per core).
//
// The summation order is fixed by the shapes alone (chunks in batch order, pixels in row-major
// order within a chunk; products in kernel order for the forward), so results are bitwise
// reproducible run to run and the same for any thread count.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

using Image4 = ffi::Buffer<ffi::F32, 4>;
using Result4 = ffi::ResultBuffer<ffi::F32, 4>;

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRegisters = 32;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kRegisters = 16;
#else
constexpr int kLanes = 4;
constexpr int kRegisters = 16;
#endif

// An unaligned vector of kLanes floats that may alias float data (GCC/Clang vector extension;
// compiled for the host's widest ISA at build time).
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float)), aligned(4), may_alias));

inline Vec Load(const float* p) { return *reinterpret_cast<const Vec*>(p); }
inline void Store(float* p, Vec v) { *reinterpret_cast<Vec*>(p) = v; }

struct Geometry {
  int64_t n, h, w, cin;       // input
  int64_t ho, wo, cout;       // output gradient
  int64_t kh, kw, sh, sw;     // kernel and strides
  int64_t pt, pl;             // top and left padding
  int64_t hp, wp;             // padded input height and width the output needs
};

// The rank-1 update at the heart of both kernels: acc[m] += a[m * step] (broadcast) * b, for an
// MR x NV block of vectors held in registers (the loops are unrolled at compile time).
template <int MR, int NV>
inline void RankOneUpdate(Vec (&acc)[MR][NV], const float* a, int64_t step, const float* b) {
  Vec bv[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) bv[v] = Load(b + v * kLanes);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] += a[m * step] * bv[v];
  }
}

// One MR x (NV*kLanes) block of dw[a] accumulated over the chunk's rows of pixels.
// a_rows[r] points at the padded input row (offset to the block's first m), g_rows[r] at the
// output-gradient row (offset to the block's first output channel).
template <int MR, int NV>
void MicroKernel(const float* const* a_rows, const float* const* g_rows, int64_t rows, int64_t wo, int64_t a_step,
                 int64_t g_step, float* dw, int64_t ldw) {
  Vec acc[MR][NV];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = Load(dw + m * ldw + v * kLanes);
  // One flat loop over every pixel of the chunk, so that the accumulators stay in registers
  // from the first row to the last (the rows of a 4x4 output map are only 4 pixels long).
  const float* a = a_rows[0];
  const float* g = g_rows[0];
  for (int64_t r = 0, j = 0; r < rows;) {
    RankOneUpdate<MR, NV>(acc, a, 1, g);
    if (++j < wo) {
      a += a_step;
      g += g_step;
    } else if (++r < rows) {
      j = 0;
      a = a_rows[r];
      g = g_rows[r];
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < NV; ++v) Store(dw + m * ldw + v * kLanes, acc[m][v]);
}

// The largest row block that keeps MR*NV accumulators plus NV operand vectors in registers.
template <int NV>
constexpr int RowBlock() {
  return (kRegisters - NV - 2) / NV < 24 ? (kRegisters - NV - 2) / NV : 24;
}

using Kernel = void (*)(const float* const*, const float* const*, int64_t, int64_t, int64_t, int64_t, float*,
                        int64_t);

template <int NV, int MR>
Kernel KernelFor(int mr) {
  if constexpr (MR == 0) {
    return nullptr;
  } else {
    return mr == MR ? &MicroKernel<MR, NV> : KernelFor<NV, MR - 1>(mr);
  }
}

// Accumulates one batch chunk's contribution into the tiles of dw (kh, kw*cin, cout) that
// belong to `slot` of `slots`: tile t (kernel row, row block, column block) is slot t % slots's.
// Each tile sums the same pixels in the same order whichever slot computes it, so the result
// does not depend on the number of threads.
template <int NV>
void AccumulateChunk(const Geometry& geo, const float* xp, const float* g, int64_t images, float* dw, int64_t slot,
                     int64_t slots, std::vector<const float*>& a_rows, std::vector<const float*>& g_rows) {
  constexpr int kMR = RowBlock<NV>();
  const int64_t m_total = geo.kw * geo.cin;
  const int64_t block_cols = NV * kLanes;
  const int64_t rows = images * geo.ho;
  int64_t tile = 0;
  for (int64_t a = 0; a < geo.kh; ++a) {
    float* dw_a = dw + a * m_total * geo.cout;
    for (int64_t m0 = 0; m0 < m_total; m0 += kMR) {
      const int mr = static_cast<int>(std::min<int64_t>(kMR, m_total - m0));
      Kernel kernel = KernelFor<NV, kMR>(mr);
      for (int64_t c0 = 0; c0 < geo.cout; c0 += block_cols, ++tile) {
        if (tile % slots != slot) continue;
        int64_t r = 0;
        for (int64_t n = 0; n < images; ++n) {
          for (int64_t i = 0; i < geo.ho; ++i, ++r) {
            a_rows[r] = xp + ((n * geo.hp + i * geo.sh + a) * geo.wp) * geo.cin + m0;
            g_rows[r] = g + ((n * geo.ho + i) * geo.wo) * geo.cout + c0;
          }
        }
        kernel(a_rows.data(), g_rows.data(), rows, geo.wo, geo.sw * geo.cin, geo.cout, dw_a + m0 * geo.cout + c0,
               geo.cout);
      }
    }
  }
}

template <int NV>
int64_t TileCount(const Geometry& geo) {
  constexpr int kMR = RowBlock<NV>();
  return geo.kh * ((geo.kw * geo.cin + kMR - 1) / kMR) * (geo.cout / (NV * kLanes));
}

// Copies `images` images of x into xp with the convolution's zero padding (only the rows and
// columns that the output reads: hp x wp).
void PadChunk(const Geometry& geo, const float* x, int64_t images, float* xp) {
  const int64_t row = geo.wp * geo.cin;
  std::memset(xp, 0, sizeof(float) * images * geo.hp * row);
  const int64_t c_lo = std::max<int64_t>(0, geo.pl);               // first padded column with data
  const int64_t c_hi = std::min<int64_t>(geo.wp, geo.pl + geo.w);  // one past the last
  if (c_hi <= c_lo) return;
  for (int64_t n = 0; n < images; ++n) {
    for (int64_t r = 0; r < geo.hp; ++r) {
      const int64_t src_r = r - geo.pt;
      if (src_r < 0 || src_r >= geo.h) continue;
      std::memcpy(xp + (n * geo.hp + r) * row + c_lo * geo.cin,
                  x + ((n * geo.h + src_r) * geo.w + c_lo - geo.pl) * geo.cin, sizeof(float) * (c_hi - c_lo) * geo.cin);
    }
  }
}

// Runs body(part) for part in [0, parts) on the calling thread and up to parts - 1 of the
// pool's threads. Parts are claimed from a shared counter, so the call finishes even when the
// pool's threads are all busy; the shared state outlives the call for tasks that start late.
template <typename Body>
void ParallelFor(ffi::ThreadPool& pool, int64_t parts, Body body) {
  struct Shared {
    std::function<void(int64_t)> body;
    int64_t parts;
    std::atomic<int64_t> next{0};
    std::mutex mu;
    std::condition_variable done_cv;
    int64_t done = 0;
  };
  auto shared = std::make_shared<Shared>();
  shared->body = body;
  shared->parts = parts;
  auto work = [](Shared& s) {
    for (int64_t part; (part = s.next.fetch_add(1)) < s.parts;) {
      s.body(part);
      std::lock_guard<std::mutex> lock(s.mu);
      if (++s.done == s.parts) s.done_cv.notify_all();
    }
  };
  for (int64_t t = 1; t < parts; ++t) {
    pool.Schedule([shared, work] { work(*shared); });
  }
  work(*shared);
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->done_cv.wait(lock, [&] { return shared->done == shared->parts; });
}

// What one weight-gradient call shares between its parts.
struct Job {
  Geometry geo;
  const float* x;
  const float* g;
  float* dw;
  int64_t images;  // per batch chunk
  bool two_vectors;
  int64_t slots;
};

void RunSlot(const Job& job, int64_t slot) {
  const Geometry& geo = job.geo;
  std::vector<float> xp(job.images * geo.hp * geo.wp * geo.cin);
  std::vector<const float*> a_rows(job.images * geo.ho), g_rows(job.images * geo.ho);
  for (int64_t n0 = 0; n0 < geo.n; n0 += job.images) {
    const int64_t count = std::min(job.images, geo.n - n0);
    PadChunk(geo, job.x + n0 * geo.h * geo.w * geo.cin, count, xp.data());
    const float* g0 = job.g + n0 * geo.ho * geo.wo * geo.cout;
    if (job.two_vectors) {
      AccumulateChunk<2>(geo, xp.data(), g0, count, job.dw, slot, job.slots, a_rows, g_rows);
    } else {
      AccumulateChunk<1>(geo, xp.data(), g0, count, job.dw, slot, job.slots, a_rows, g_rows);
    }
  }
}

// The geometry of x (N, H, W, Cin) convolved with a (kh, kw, Cin, Cout) kernel into a
// (N, Ho, Wo, Cout) map, checked: an error names the handler and what disagrees.
using Dims = ffi::AnyBuffer::Dimensions;

ffi::Error MakeGeometry(const char* name, Dims xd, Dims wd, Dims yd, int64_t sh, int64_t sw, int64_t pt, int64_t pl,
                        Geometry& geo) {
  geo = Geometry{xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], yd[3], wd[0], wd[1], sh, sw, pt, pl, 0, 0};
  if (yd[0] != geo.n || wd[2] != geo.cin || wd[3] != geo.cout) {
    return ffi::Error::InvalidArgument(std::string(name) + ": the input, kernel and output shapes disagree");
  }
  if (geo.cout % kLanes != 0) {
    return ffi::Error::InvalidArgument(std::string(name) + ": Cout must be a multiple of the vector width");
  }
  geo.hp = (geo.ho - 1) * sh + geo.kh;
  geo.wp = (geo.wo - 1) * sw + geo.kw;
  return ffi::Error::Success();
}

ffi::Error WeightGrad(ffi::ThreadPool pool, Image4 x, Image4 g, Result4 dw, int64_t sh, int64_t sw, int64_t pt,
                      int64_t pl, int64_t chunk_bytes, int64_t threads) {
  Geometry geo;
  if (ffi::Error error = MakeGeometry("sslax_conv_weight_grad", x.dimensions(), dw->dimensions(), g.dimensions(), sh,
                                      sw, pt, pl, geo);
      error.failure()) {
    return error;
  }
  float* out = dw->typed_data();
  std::fill(out, out + geo.kh * geo.kw * geo.cin * geo.cout, 0.0f);
  if (geo.n == 0) return ffi::Error::Success();

  Job job{geo, x.typed_data(), g.typed_data(), out, 0, geo.cout % (2 * kLanes) == 0, 1};
  const int64_t image_bytes = sizeof(float) * (geo.hp * geo.wp * geo.cin + geo.ho * geo.wo * geo.cout);
  job.images = std::max<int64_t>(1, std::min<int64_t>(geo.n, chunk_bytes / image_bytes));
  const int64_t tiles = job.two_vectors ? TileCount<2>(geo) : TileCount<1>(geo);
  job.slots = std::max<int64_t>(1, std::min({threads, tiles, pool.num_threads() + 1}));
  ParallelFor(pool, job.slots, [&job](int64_t slot) { RunSlot(job, slot); });
  return ffi::Error::Success();
}


// ---------------------------------------------------------------------------------------------
// The forward convolution y = conv(x, w), and through it the input gradient of an unstrided one.
//
// y[n, i, j, co] = sum over (a, b, ci) of xp[n, i*sh + a, j*sw + b, ci] * w[a, b, ci, co]: for
// kernel row a and output pixel j the kw*Cin inputs (over b and ci) lie contiguously at
// xp_row(i*sh + a)[j*sw*Cin ...], and w[a] is (kw*Cin, Cout) row-major, so each register block
// of y (MR consecutive pixels of one output row x NV vectors of Cout) is a small GEMM summed
// over kh rows of kw*Cin products, stored once.

// STEP: floats between neighbouring output pixels' inputs (sw*Cin), a compile-time constant for
// the common values so that the MR broadcast addresses are immediate offsets from one pointer
// (with a run-time step GCC keeps the MR offsets on the stack and reloads them every k); 0 means
// the run-time `x_step`.
template <int MR, int NV, int STEP>
void ForwardBlock(const float* x, int64_t k_len, int64_t x_step, const float* w, int64_t ldw, float* y, int64_t ldy,
                  bool accumulate) {
  const int64_t step = STEP > 0 ? STEP : x_step;
  Vec acc[MR][NV];
  for (int p = 0; p < MR; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = accumulate ? Load(y + p * ldy + v * kLanes) : Vec{};
  for (int64_t k = 0; k < k_len; ++k, ++x, w += ldw) {
    RankOneUpdate<MR, NV>(acc, x, step, w);
  }
  for (int p = 0; p < MR; ++p)
    for (int v = 0; v < NV; ++v) Store(y + p * ldy + v * kLanes, acc[p][v]);
}

using ForwardFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, bool);

// The compile-time steps: Cin 16 and 32 at stride 1 or 2 (the 16- and 32-channel layers, whose
// blocks have more than 8 pixels) and an RGB stem's 3. Blocks of up to 8 pixels keep their
// offsets in registers with any step.
template <int MR, int NV, int STEP, int... MORE>
ForwardFn ForwardWithStep(int64_t step) {
  if (step == STEP) return &ForwardBlock<MR, NV, STEP>;
  if constexpr (sizeof...(MORE) > 0) {
    return ForwardWithStep<MR, NV, MORE...>(step);
  } else {
    return &ForwardBlock<MR, NV, 0>;
  }
}

template <int NV, int MR>
ForwardFn ForwardFor(int mr, int64_t step) {
  if constexpr (MR == 0) {
    return nullptr;
  } else if (mr != MR) {
    return ForwardFor<NV, MR - 1>(mr, step);
  } else if constexpr (MR > 8) {
    return ForwardWithStep<MR, NV, 3, 16, 32, 64>(step);
  } else {
    return &ForwardBlock<MR, NV, 0>;
  }
}

// The register blocks: NV vectors of output channels (the most of 4, 2, 1 that divides Cout's
// vectors) times MR pixels of a row, the row split into equal blocks of at most
// accumulators / NV pixels (a 32-pixel row with 24 accumulators: two blocks of 16).
struct ForwardPlan {
  int nv;
  int mr;
  ForwardFn fn;       // MR-pixel blocks
  ForwardFn tail_fn;  // the row's last, shorter block (wo % mr pixels), if any
};

constexpr int kForwardAccumulators = kRegisters >= 32 ? 24 : 12;

template <int NV>
ForwardFn ForwardForBlocks(int mr, int64_t step) {
  return mr == 0 ? nullptr : ForwardFor<NV, kForwardAccumulators / NV>(mr, step);
}

ForwardPlan PlanForward(int64_t cout, int64_t wo, int64_t step) {
  const int64_t vectors = cout / kLanes;
  const int nv = vectors % 4 == 0 ? 4 : vectors % 2 == 0 ? 2 : 1;
  const int64_t most = kForwardAccumulators / nv;
  const int64_t blocks = (wo + most - 1) / most;
  const int mr = static_cast<int>((wo + blocks - 1) / blocks);
  const int tail = static_cast<int>(wo % mr);
  if (nv == 4) return {nv, mr, ForwardForBlocks<4>(mr, step), ForwardForBlocks<4>(tail, step)};
  if (nv == 2) return {nv, mr, ForwardForBlocks<2>(mr, step), ForwardForBlocks<2>(tail, step)};
  return {nv, mr, ForwardForBlocks<1>(mr, step), ForwardForBlocks<1>(tail, step)};
}

// Products (rows of w) per pass over an image: the pass's block of w, kForwardDepth x NV vectors
// (32 KiB with NV = 4), stays in the L1 cache while every pixel of the image uses it. Without
// it, full-width layers (K = 9 x 64-512) streamed all of w from L2 for every 6-pixel block and
// ran slower than XLA's convolution.
constexpr int64_t kForwardDepth = 128;

// Images [n_begin, n_end) of y. Passes over (kernel row, block of kw*Cin products) add to y in the order of the products, so
// every output is the same sum, in the same order, as in one pass.
void ForwardImages(const Geometry& geo, const float* x, const float* w, float* y, int64_t n_begin, int64_t n_end) {
  const ForwardPlan plan = PlanForward(geo.cout, geo.wo, geo.sw * geo.cin);
  const int64_t k_len = geo.kw * geo.cin;
  const int64_t block_cols = plan.nv * kLanes;
  std::vector<float> xp(geo.hp * geo.wp * geo.cin);
  for (int64_t n = n_begin; n < n_end; ++n) {
    PadChunk(geo, x + n * geo.h * geo.w * geo.cin, 1, xp.data());
    float* y_image = y + n * geo.ho * geo.wo * geo.cout;
    for (int64_t c0 = 0; c0 < geo.cout; c0 += block_cols) {
      for (int64_t a = 0; a < geo.kh; ++a) {
        for (int64_t k0 = 0; k0 < k_len; k0 += kForwardDepth) {
          const int64_t depth = std::min(kForwardDepth, k_len - k0);
          const float* w_block = w + (a * k_len + k0) * geo.cout + c0;
          const bool accumulate = a > 0 || k0 > 0;
          for (int64_t i = 0; i < geo.ho; ++i) {
            const float* x_row = xp.data() + (i * geo.sh + a) * geo.wp * geo.cin + k0;
            float* y_row = y_image + i * geo.wo * geo.cout + c0;
            for (int64_t j = 0; j < geo.wo; j += plan.mr) {
              ForwardFn fn = j + plan.mr <= geo.wo ? plan.fn : plan.tail_fn;
              fn(x_row + j * geo.sw * geo.cin, depth, geo.sw * geo.cin, w_block, geo.cout, y_row + j * geo.cout,
                 geo.cout, accumulate);
            }
          }
        }
      }
    }
  }
}

ffi::Error Forward(ffi::ThreadPool pool, Image4 x, Image4 w, Result4 y, int64_t sh, int64_t sw, int64_t pt,
                   int64_t pl, int64_t threads) {
  Geometry geo;
  if (ffi::Error error = MakeGeometry("sslax_conv_forward", x.dimensions(), w.dimensions(), y->dimensions(), sh, sw,
                                      pt, pl, geo);
      error.failure()) {
    return error;
  }
  if (geo.n == 0 || geo.ho == 0 || geo.wo == 0) return ffi::Error::Success();
  // Whole images per part: every output value is computed by one thread, in one order.
  const int64_t parts = std::max<int64_t>(1, std::min({threads, geo.n, pool.num_threads() + 1}));
  const float* xs = x.typed_data();
  const float* ws = w.typed_data();
  float* ys = y->typed_data();
  ParallelFor(pool, parts, [&geo, xs, ws, ys, parts](int64_t part) {
    ForwardImages(geo, xs, ws, ys, geo.n * part / parts, geo.n * (part + 1) / parts);
  });
  return ffi::Error::Success();
}

}  // namespace

extern "C" int sslax_conv_lanes() { return kLanes; }

namespace {

// Both handlers: the thread pool, two 4-D float32 operands, one result, strides and top/left padding.
auto ConvBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<Image4>()
      .Arg<Image4>()
      .Ret<Image4>()
      .Attr<int64_t>("sh")
      .Attr<int64_t>("sw")
      .Attr<int64_t>("pt")
      .Attr<int64_t>("pl");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SslaxConvForward, Forward, ConvBinding().Attr<int64_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(SslaxConvWeightGrad, WeightGrad,
                              ConvBinding().Attr<int64_t>("chunk_bytes").Attr<int64_t>("threads"));
