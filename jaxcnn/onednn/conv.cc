// 2-D convolution on oneDNN as XLA FFI handlers: forward, input gradient, kernel gradient.
//
// Activations NHWC, kernels HWIO (jaxcnn's layouts), float32 or bfloat16, any stride, explicit
// (possibly asymmetric) padding, no dilation or groups (jaxcnn/onednn/conv.py sends those to XLA).
// `geometry` = (stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right).
//
// Primitives are created once per shape and kept in a bounded LRU cache. Kernels are described to
// oneDNN as `format_tag::any` and reordered into the layout each primitive prefers: with plain HWIO
// kernels oneDNN 3.2 picks a GEMM path for the backward passes that is ~100x slower.
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;

namespace {

std::atomic<int> g_threads{0};  // OpenMP threads per convolution; 0: OpenMP's default

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr;
  memory::data_type type;
  auto key() const { return std::tie(n, h, w, c, kh, kw, o, sh, sw, pt, pb, pl, pr, type); }
  bool operator<(const Geometry& g) const { return key() < g.key(); }
};

struct Primitives {
  dnnl::convolution_forward forward;
  dnnl::convolution_backward_data backward_data;
  dnnl::convolution_backward_weights backward_weights;
  memory::desc x, w, y, w_forward, w_backward_data, dw_backward;
  memory::desc scratch_forward, scratch_backward_data, scratch_backward_weights;
};

Primitives make_primitives(const Geometry& g) {
  auto& e = engine();
  memory::desc x({g.n, g.c, g.h, g.w}, g.type, tag::nhwc);
  memory::desc w({g.o, g.c, g.kh, g.kw}, g.type, tag::hwio);
  memory::desc w_any({g.o, g.c, g.kh, g.kw}, g.type, tag::any);
  memory::desc y({g.n, g.o, g.oh, g.ow}, g.type, tag::nhwc);
  memory::dims strides{g.sh, g.sw}, pad_lo{g.pt, g.pl}, pad_hi{g.pb, g.pr};
  auto algo = dnnl::algorithm::convolution_direct;
  // Each call brings its own scratchpad: XLA runs independent calls (the two gradients, the
  // devices of a sharded batch) at once, and oneDNN's library-managed scratchpad is shared.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc fwd(e, dnnl::prop_kind::forward_training, algo, x, w_any,
                                                y, strides, pad_lo, pad_hi, attr);
  dnnl::convolution_backward_data::primitive_desc bwd_data(e, algo, x, w_any, y, strides, pad_lo,
                                                           pad_hi, fwd, attr);
  dnnl::convolution_backward_weights::primitive_desc bwd_w(e, algo, x, w_any, y, strides, pad_lo,
                                                           pad_hi, fwd, attr);
  return {dnnl::convolution_forward(fwd), dnnl::convolution_backward_data(bwd_data),
          dnnl::convolution_backward_weights(bwd_w), x, w, y, fwd.weights_desc(),
          bwd_data.weights_desc(), bwd_w.diff_weights_desc(), fwd.scratchpad_desc(),
          bwd_data.scratchpad_desc(), bwd_w.scratchpad_desc()};
}

// A bounded LRU cache: a training step uses a few dozen shapes, a shape sweep (benchmarks,
// `--batch-size auto`) many; entries are shared_ptrs so an eviction never frees one in use.
class Cache {
 public:
  std::shared_ptr<const Primitives> get(const Geometry& g) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(g);
    if (it != map_.end()) {
      order_.splice(order_.begin(), order_, it->second.second);
      return it->second.first;
    }
    auto p = std::make_shared<const Primitives>(make_primitives(g));
    order_.push_front(g);
    map_.emplace(g, std::make_pair(p, order_.begin()));
    if (map_.size() > kCapacity) {
      map_.erase(order_.back());
      order_.pop_back();
    }
    return p;
  }

 private:
  static constexpr size_t kCapacity = 512;
  std::mutex mu_;
  std::list<Geometry> order_;
  std::map<Geometry, std::pair<std::shared_ptr<const Primitives>, std::list<Geometry>::iterator>>
      map_;
};

Cache& cache() {
  static Cache c;
  return c;
}

// x: NHWC input dims, w: HWIO kernel dims, a: the geometry attribute.
ffi::Error geometry(ffi::AnyBuffer::Dimensions x, ffi::AnyBuffer::Dimensions w, ffi::DataType type,
                    ffi::Span<const int64_t> a, Geometry& g) {
  if (x.size() != 4 || w.size() != 4 || a.size() != 6)
    return ffi::Error::InvalidArgument("oneDNN convolution: expects NHWC, HWIO and 6 geometry values");
  if (type != ffi::DataType::F32 && type != ffi::DataType::BF16)
    return ffi::Error::InvalidArgument("oneDNN convolution: only float32 and bfloat16");
  if (w[2] != x[3]) return ffi::Error::InvalidArgument("oneDNN convolution: channel mismatch");
  auto t = type == ffi::DataType::F32 ? memory::data_type::f32 : memory::data_type::bf16;
  g = Geometry{x[0], x[1], x[2], x[3], w[0], w[1], w[3], 0, 0, a[0], a[1], a[2], a[3], a[4], a[5], t};
  g.oh = (g.h + g.pt + g.pb - g.kh) / g.sh + 1;
  g.ow = (g.w + g.pl + g.pr - g.kw) / g.sw + 1;
  return ffi::Error::Success();
}

void use_thread_count() {
  // OpenMP's thread count is per calling thread; XLA calls handlers from its own pool's threads.
  int n = g_threads.load(std::memory_order_relaxed);
  if (n > 0 && omp_get_max_threads() != n) omp_set_num_threads(n);
}

template <typename F>
ffi::Error guarded(F&& body) {
  try {
    use_thread_count();
    body();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution: ") + e.what());
  }
}

// `plain` in the layout `wanted`: itself when they match, else a reordered copy.
memory in_layout(const memory& plain, const memory::desc& wanted, dnnl::stream& s) {
  if (plain.get_desc() == wanted) return plain;
  memory out(wanted, engine());
  dnnl::reorder(plain, out).execute(s, const_cast<memory&>(plain), out);
  return out;
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> geo) {
  Geometry g;
  if (auto e = geometry(x.dimensions(), w.dimensions(), x.element_type(), geo, g); e.failure()) return e;
  return guarded([&] {
    auto p = cache().get(g);
    dnnl::stream s(engine());
    memory xm(p->x, engine(), x.untyped_data()), ym(p->y, engine(), y->untyped_data());
    memory wm = in_layout(memory(p->w, engine(), w.untyped_data()), p->w_forward, s);
    memory scratch(p->scratch_forward, engine());
    p->forward.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym},
                           {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> geo) {
  Geometry g;
  if (auto e = geometry(dx->dimensions(), w.dimensions(), dy.element_type(), geo, g); e.failure()) return e;
  return guarded([&] {
    auto p = cache().get(g);
    dnnl::stream s(engine());
    memory dym(p->y, engine(), dy.untyped_data()), dxm(p->x, engine(), dx->untyped_data());
    memory wm = in_layout(memory(p->w, engine(), w.untyped_data()), p->w_backward_data, s);
    memory scratch(p->scratch_backward_data, engine());
    p->backward_data.execute(s, {{DNNL_ARG_DIFF_DST, dym}, {DNNL_ARG_WEIGHTS, wm},
                                 {DNNL_ARG_DIFF_SRC, dxm}, {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           ffi::Span<const int64_t> geo) {
  Geometry g;
  if (auto e = geometry(x.dimensions(), dw->dimensions(), x.element_type(), geo, g); e.failure()) return e;
  return guarded([&] {
    auto p = cache().get(g);
    dnnl::stream s(engine());
    memory xm(p->x, engine(), x.untyped_data()), dym(p->y, engine(), dy.untyped_data());
    memory dwm(p->w, engine(), dw->untyped_data());
    memory dk = p->dw_backward == p->w ? dwm : memory(p->dw_backward, engine());
    memory scratch(p->scratch_backward_weights, engine());
    p->backward_weights.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_DST, dym},
                                    {DNNL_ARG_DIFF_WEIGHTS, dk}, {DNNL_ARG_SCRATCHPAD, scratch}});
    if (p->dw_backward != p->w) dnnl::reorder(dk, dwm).execute(s, dk, dwm);
    s.wait();
  });
}

}  // namespace

// All three take two arrays and the geometry, and return one array.
static auto binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<ffi::Span<const int64_t>>("geometry");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxcnn_conv_forward, Forward, binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxcnn_conv_backward_data, BackwardData, binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxcnn_conv_backward_weights, BackwardWeights, binding());

extern "C" {

void jaxcnn_onednn_set_threads(int n) { g_threads.store(n); }

// 1 when oneDNN implements all three primitives for `type` (0: f32, 1: bf16) on this CPU.
int jaxcnn_onednn_supports(int type) {
  try {
    use_thread_count();
    auto t = type == 1 ? memory::data_type::bf16 : memory::data_type::f32;
    make_primitives(Geometry{2, 8, 8, 16, 3, 3, 16, 8, 8, 1, 1, 1, 1, 1, 1, t});
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}

}  // extern "C"
