// steepest._core -- the library's optimizers over arrays that cross from Python without a copy.
//
// A `Core` is one named optimizer (st::adamw, st::muon, ...) bound to one list of parameters.
// CPU parameters and gradients arrive as float32 arrays through nanobind's ndarray, which takes
// DLPack capsules and the array interfaces: torch tensors and numpy arrays are viewed in place,
// whatever torch version made them (nothing here links torch). torch's tensors are also read
// directly (step_tensors: their data_ptr, .grad, .dtype, is_contiguous), which is how CUDA
// tensors reach a Core made by make_cuda (device pointers; a build with nvcc). The parameter
// set keeps the parameters' pointers; a step that finds one moved returns, and the caller checks
// the tensors and rebinds; shapes and names are checked before anything is written.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <limits>

#include "core.hpp"

namespace nb = nanobind;
using namespace steepest_python;

#ifdef STEEPEST_PYTHON_CUDA
namespace steepest::cuda {
struct Device;  // cuda/executor.cuh: the families are instantiated for it in cuda_*.cu
}
#endif

namespace steepest_python {

std::unique_ptr<Core> make_on_host(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah, const MakeArgs& a) {
  for (auto* family : {&make_elementwise<st::Host>, &make_muon<st::Host>, &make_scion<st::Host>})
    if (auto core = family(kind, hp, ah, a)) return core;
  throw std::invalid_argument("unknown optimizer '" + kind + "'");
}

std::unique_ptr<Core> make_on_device(const std::string& kind, const st::Hyper& hp, const st::Hyper& ah,
                                     const MakeArgs& a) {
#ifdef STEEPEST_PYTHON_CUDA
  for (auto* family : {&make_elementwise<st::cuda::Device>, &make_muon<st::cuda::Device>, &make_scion<st::cuda::Device>})
    if (auto core = family(kind, hp, ah, a)) return core;
  throw std::invalid_argument("unknown optimizer '" + kind + "'");
#else
  (void)kind, (void)hp, (void)ah, (void)a;
  throw std::invalid_argument("steepest: this build of the package has no CUDA support (nvcc was not found when "
                              "it was built): it steps CPU tensors");
#endif
}

}  // namespace steepest_python

namespace {

/// A float32 array in CPU memory, C-contiguous: a view, never a copy.
using Array = nb::ndarray<float, nb::device::cpu, nb::c_contig>;
/// A gradient: float32 or bfloat16 (checked at the step), CPU, C-contiguous, viewed; None for
/// a tensor that has none this step (it is skipped).
using Grad = nb::ndarray<nb::device::cpu, nb::c_contig>;
using MaybeGrad = std::optional<Grad>;
/// A matrix of scalar S in CPU memory, C-contiguous (rows = the first dimension).
template <class S>
using Matrix = nb::ndarray<S, nb::device::cpu, nb::c_contig>;

std::vector<ParamRef> refs_of(const std::vector<Array>& params) {
  std::vector<ParamRef> out;
  for (const Array& a : params) out.push_back({const_cast<float*>(a.data()), shape_of(a)});
  return out;
}

/// A tensor's shape (its dimensions) as a matrix: the first dimension x the product of the
/// others; a negative dimension, or a product past the index type, is refused.
Shape shape_of_dims(const std::vector<std::int64_t>& dims) {
  Shape s;
  for (std::size_t d = 0; d < dims.size(); ++d) {
    if (dims[d] < 0) throw std::invalid_argument("steepest: a negative dimension");
    if (d == 0) {
      s.rows = st::Index(dims[0]);
    } else if (dims[d] != 0 && s.cols > std::numeric_limits<st::Index>::max() / dims[d]) {
      throw std::overflow_error("steepest: a tensor's size overflows");
    } else {
      s.cols *= st::Index(dims[d]);
    }
  }
  if (s.cols != 0 && s.rows > std::numeric_limits<st::Index>::max() / s.cols)
    throw std::overflow_error("steepest: a tensor's size overflows");
  return s;
}

std::vector<ParamRef> refs_of(const std::vector<std::uintptr_t>& addresses,
                              const std::vector<std::vector<std::int64_t>>& shapes) {
  if (addresses.size() != shapes.size()) throw std::invalid_argument("steepest: addresses and shapes differ in number");
  std::vector<ParamRef> out;
  for (std::size_t i = 0; i < addresses.size(); ++i)
    out.push_back({reinterpret_cast<float*>(addresses[i]), shape_of_dims(shapes[i])});
  return out;
}

/// The named optimizers by name, as the C++ functions of the same names make them, over float32
/// CPU arrays viewed in place.
std::unique_ptr<Core> make(const std::string& kind, const PyHyper& p, const PyHyper& a,
                           const std::vector<std::string>& names, const std::vector<std::string>& roles,
                           const std::vector<Array>& params, std::vector<std::string> geometries) {
  if (geometries.empty()) geometries.resize(params.size());  // none overridden
  const std::vector<ParamRef> refs = refs_of(params);
  return make_on_host(kind, p.get(), a.get(), MakeArgs{names, roles, geometries, refs});
}

/// The same over tensors in the memory of CUDA device `device` (addresses and shapes, read from
/// tensors the caller checked: float32, contiguous, dense, on that device), starting on
/// `stream`.
std::unique_ptr<Core> make_cuda(const std::string& kind, const PyHyper& p, const PyHyper& a,
                                const std::vector<std::string>& names, const std::vector<std::string>& roles,
                                const std::vector<std::uintptr_t>& addresses,
                                const std::vector<std::vector<std::int64_t>>& shapes, std::vector<std::string> geometries,
                                int device, std::uintptr_t stream) {
  if (geometries.empty()) geometries.resize(addresses.size());
  const std::vector<ParamRef> refs = refs_of(addresses, shapes);
  return make_on_device(kind, p.get(), a.get(), MakeArgs{names, roles, geometries, refs, device, stream});
}

/// One step over arrays: the parameters again (None: where they were), and the gradients (None:
/// skipped), all checked before anything is stepped.
bool step_arrays(Core& c, const std::optional<std::vector<Array>>& params, const std::vector<MaybeGrad>& grads,
                 double lr_factor, const PyHyper& hp, const PyHyper& adamw_hp) {
  if (c.device() >= 0) throw std::invalid_argument("steepest: this optimizer steps CUDA tensors, not CPU arrays");
  if (grads.size() != c.size())
    throw std::invalid_argument("steepest: the step got " + std::to_string(grads.size()) + " gradients for " +
                                std::to_string(c.size()));
  // A gradient is float32, or bfloat16 (widened exactly as it is read).
  const nb::dlpack::dtype f32 = nb::dtype<float>(), bf16{std::uint8_t(nb::dlpack::dtype_code::Bfloat), 16, 1};
  std::vector<GradRef> refs(grads.size());
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i]) continue;
    const nb::dlpack::dtype d = grads[i]->dtype();
    if (d != f32 && d != bf16) throw dtype_error("steepest: the gradient of '" + c.tensor_name(i) + "' is neither float32 nor bfloat16");
    const Shape gs = shape_of(*grads[i]), ps = c.shape(i);
    if (gs.rows * gs.cols != ps.rows * ps.cols)
      throw st::shape_error("parameter '" + c.tensor_name(i) + "': its gradient has another shape");
    refs[i] = {grads[i]->data(), d == bf16};
  }
  if (params) c.rebind(refs_of(*params));  // (after the gradients' checks: a refused step moves nothing)
  return c.step_refs(refs, lr_factor, hp, adamw_hp);
}

/// torch's tensor methods and properties that a step reads, looked up once per Python type
/// (nn.Parameter, Tensor, a subclass) and called through their descriptors. For a call with
/// nothing else to do, looking `name` up on the object (the type's attribute cache, the MRO, the
/// instance dict) is a third of what `obj.name` costs; the descriptor is what that lookup finds.
/// A type changed since it was looked up (a method patched: CPython then gives it another
/// version tag) is looked up again. An attribute that is neither a built-in method nor a data
/// descriptor (a subclass's own Python method, say) is called by name, as Python would.
class TorchAccess {
 public:
  struct Of {
    nb::object type;  // the type, held so that its address is not reused
    unsigned int version = 0;
    nb::object data_ptr_, grad_, dtype_, is_contiguous_;  // descriptors; null: call by name

    nb::object data_ptr(PyObject* t) const { return method(data_ptr_, t, names().data_ptr); }
    nb::object is_contiguous(PyObject* t) const { return method(is_contiguous_, t, names().is_contiguous); }
    nb::object grad(PyObject* t) const { return attribute(grad_, t, names().grad); }
    nb::object dtype(PyObject* t) const { return attribute(dtype_, t, names().dtype); }
  };

  /// The descriptors of type `t` (found, or looked up now); a copy, which a call that runs
  /// Python and re-enters here cannot invalidate.
  Of of(PyTypeObject* t) {
    for (const Of& o : types_)
      if (o.type.ptr() == reinterpret_cast<PyObject*>(t) && o.version != 0 && o.version == t->tp_version_tag) return o;
    Of o;
    o.type = nb::borrow(reinterpret_cast<PyObject*>(t));
    o.data_ptr_ = lookup(t, names().data_ptr, true);
    o.is_contiguous_ = lookup(t, names().is_contiguous, true);
    o.grad_ = lookup(t, names().grad, false);
    o.dtype_ = lookup(t, names().dtype, false);
    o.version = t->tp_version_tag;  // assigned by the lookups; 0 (none): looked up every time
    for (Of& old : types_)
      if (old.type.ptr() == o.type.ptr()) return old = std::move(o);
    types_.push_back(std::move(o));
    return types_.back();
  }

 private:
  struct Names {
    PyObject* data_ptr = PyUnicode_InternFromString("data_ptr");
    PyObject* grad = PyUnicode_InternFromString("grad");
    PyObject* dtype = PyUnicode_InternFromString("dtype");
    PyObject* is_contiguous = PyUnicode_InternFromString("is_contiguous");
  };
  static const Names& names() {
    static const Names n;
    return n;
  }
  /// The type's attribute `name` when calling it directly is what obj.name would do: a
  /// built-in method (method) or a data descriptor (attribute, which wins over the instance
  /// dict); else null.
  static nb::object lookup(PyTypeObject* t, PyObject* name, bool method) {
    PyObject* d = PyObject_GetAttr(reinterpret_cast<PyObject*>(t), name);
    if (!d) {
      PyErr_Clear();
      return {};
    }
    nb::object descr = nb::steal(d);
    const bool direct = method ? PyObject_TypeCheck(d, &PyMethodDescr_Type) != 0
                               : Py_TYPE(d)->tp_descr_get != nullptr && Py_TYPE(d)->tp_descr_set != nullptr;
    return direct ? descr : nb::object();
  }
  static nb::object method(const nb::object& descr, PyObject* t, PyObject* name) {
    PyObject* args[2] = {nullptr, t};
    PyObject* r = descr.is_valid()
                      ? PyObject_Vectorcall(descr.ptr(), args + 1, 1, nullptr)
                      : PyObject_VectorcallMethod(name, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
    if (!r) throw nb::python_error();
    return nb::steal(r);
  }
  static nb::object attribute(const nb::object& descr, PyObject* t, PyObject* name) {
    PyObject* r = descr.is_valid()
                      ? Py_TYPE(descr.ptr())->tp_descr_get(descr.ptr(), t, reinterpret_cast<PyObject*>(Py_TYPE(t)))
                      : PyObject_GetAttr(t, name);
    if (!r) throw nb::python_error();
    return nb::steal(r);
  }

  std::vector<Of> types_;  // a few: Parameter, Tensor
};

template <class S>
void dualize_into(const Matrix<const S>& g, const Matrix<S>& d, const std::string& geometry, bool mean) {
  const Shape s = shape_of(g);
  if (d.size() != g.size()) throw st::shape_error("dualize: the output has another size than G");
  const GeometryFns f = geometry_fns(geometry, mean);
  if (s.rows * s.cols == 0) return;
  if constexpr (std::is_same_v<S, float>) f.dualize_f(g.data(), d.data(), s.rows, s.cols);
  else f.dualize_d(g.data(), d.data(), s.rows, s.cols);
}
template <class S>
double norm_of(const Matrix<const S>& w, const std::string& geometry, bool mean, bool dual) {
  const Shape s = shape_of(w);
  const GeometryFns f = geometry_fns(geometry, mean);
  if (s.rows * s.cols == 0) return 0.0;
  if constexpr (std::is_same_v<S, float>) return (dual ? f.dual_f : f.value_f)(w.data(), s.rows, s.cols);
  else return (dual ? f.dual_d : f.value_d)(w.data(), s.rows, s.cols);
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "steepest's optimizers over float32 arrays (torch tensors, numpy arrays; CUDA tensors in a build with "
            "nvcc), without copies";
  nb::class_<PyHyper>(m, "Hyper")
      .def(nb::init<>())
      .def_rw("lr", &PyHyper::lr)
      .def_rw("beta1", &PyHyper::beta1)
      .def_rw("beta2", &PyHyper::beta2)
      .def_rw("eps", &PyHyper::eps)
      .def_rw("weight_decay", &PyHyper::weight_decay)
      .def_rw("shape_factor", &PyHyper::shape_factor)
      .def_rw("on_non_finite", &PyHyper::on_non_finite);
  nb::class_<Core>(m, "Core")
      .def("step", &step_arrays, nb::arg("params").noconvert().none(), nb::arg("grads").noconvert(),
           nb::arg("lr_factor"), nb::arg("hp"), nb::arg("adamw_hp"),
           "One step over CPU arrays: the parameters (None: where the last step found them) and the gradients "
           "(None: that tensor is skipped); True, or False when skipped (on_non_finite='skip')")
      .def(
          "rebind",
          [](Core& c, const std::vector<std::uintptr_t>& addresses, const std::vector<std::vector<std::int64_t>>& shapes) {
            c.rebind(refs_of(addresses, shapes));
          },
          nb::arg("addresses"), nb::arg("shapes"),
          "The parameters at new addresses (storage that moved), with their shapes, checked against the optimizer's")
      .def("use_stream", &Core::use_stream, nb::arg("stream"),
           "The CUDA stream (an address: torch's current stream's cuda_stream) the next steps are enqueued on")
      .def_prop_ro("device", &Core::device, "The CUDA device of the tensors, or -1 for CPU memory")
      .def(
          "step_tensors",
          [](Core& c, const nb::list& params, const nb::handle& float32, const nb::handle& bfloat16, double lr_factor,
             const PyHyper& hp, const PyHyper& adamw_hp) -> nb::object {
            // The per-tensor work of a torch step in one C++ loop, through torch's own methods
            // and properties called by their descriptors (TorchAccess): each parameter's
            // address against the one the core holds (None back, nothing done, when one moved:
            // the caller then checks the tensors and rebinds), and each .grad's
            // dtype (the objects torch.float32 / torch.bfloat16), contiguity and address. torch
            // itself keeps a .grad the parameter's shape, device and dtype (or grad_dtype), so
            // these are all that is left to check. Anything else (a sparse gradient, another
            // dtype, a non-contiguous one) raises before anything is stepped, and the caller
            // names the tensor.
            static TorchAccess torch_access;
            auto address = [](const nb::object& r) {
              const std::uintptr_t a = std::uintptr_t(PyLong_AsVoidPtr(r.ptr()));
              if (a == 0 && PyErr_Occurred()) throw nb::python_error();
              return a;
            };
            const std::size_t n = params.size();
            if (n != c.size())
              throw std::invalid_argument("steepest: the step got " + std::to_string(n) + " parameters for " +
                                          std::to_string(c.size()));
            std::vector<GradRef> grads(n);
            for (std::size_t i = 0; i < n; ++i) {
              // (a reference of our own: a tensor subclass's methods may run Python that edits the list)
              if (Py_ssize_t(i) >= PyList_GET_SIZE(params.ptr())) throw std::invalid_argument("steepest: the parameter list changed");
              PyObject* const p = PyList_GET_ITEM(params.ptr(), Py_ssize_t(i));
              const nb::object keep = nb::borrow(p);
              const TorchAccess::Of pt = torch_access.of(Py_TYPE(p));
              if (address(pt.data_ptr(p)) != c.address(i)) return nb::none();
              const nb::object g = pt.grad(p);
              if (g.is_none()) continue;
              const TorchAccess::Of gt = torch_access.of(Py_TYPE(g.ptr()));
              const nb::object dtype = gt.dtype(g.ptr());
              if (!dtype.is(float32) && !dtype.is(bfloat16))
                throw nb::type_error("steepest: a gradient is neither float32 nor bfloat16");
              grads[i].bf16 = dtype.is(bfloat16);
              if (!gt.is_contiguous(g.ptr()).is(Py_True)) throw nb::type_error("steepest: a gradient is not contiguous");
              grads[i].data = reinterpret_cast<const void*>(address(gt.data_ptr(g.ptr())));
            }
            return nb::bool_(c.step_refs(grads, lr_factor, hp, adamw_hp));
          },
          nb::arg("params"), nb::arg("float32"), nb::arg("bfloat16"), nb::arg("lr_factor"), nb::arg("hp"),
          nb::arg("adamw_hp"),
          "step() over torch parameters read here (torch's float32 and bfloat16 dtype objects given): True/False as "
          "step(), None when a parameter's storage moved")
      .def_prop_ro("steps", &Core::steps)
      .def_prop_ro("last_step_seconds", &Core::last_step_seconds)
      .def_prop_ro("name", &Core::name)
      .def("save", &Core::save)
      .def("load", &Core::load)
      .def("save_bytes", [](Core& c) {
        const std::string b = c.save_bytes();
        return nb::bytes(b.data(), b.size());
      })
      .def(
          "load_bytes",
          [](Core& c, nb::ndarray<const std::uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu> file) {
            c.load_bytes(std::string_view(reinterpret_cast<const char*>(file.data()), file.shape(0)));
          },
          nb::arg("file"), "Loads a checkpoint from its bytes (bytes, or a 1-D uint8 array)")
      .def(
          "layer_state",
          [](nb::handle self, std::size_t i) {
            // Views of the buffers, kept alive by (and as long as) this Core; on a GPU, DLPack
            // views of device memory.
            Core& c = nb::cast<Core&>(self);
            auto [own, bufs] = c.layer_state(i);
            const int device_type = c.device() >= 0 ? nb::device::cuda::value : nb::device::cpu::value;
            nb::list views;
            for (const auto& [key, at, rows, cols] : bufs) {
              const std::size_t shape[2] = {rows, cols};
              views.append(nb::make_tuple(key, nb::ndarray<float, nb::c_contig>(reinterpret_cast<float*>(at), 2, shape, self,
                                                                                nullptr, nb::dtype<float>(), device_type,
                                                                                std::max(c.device(), 0))));
            }
            return nb::make_tuple(own, views);
          },
          nb::arg("i"), "(own step count, [(key, float32 view of the buffer)]) of tensor i")
      .def("operator_norms", &Core::operator_norms);
  // noconvert: an array of another dtype or layout is refused, never silently copied (a copied
  // parameter would be stepped while the caller's stays as it was).
  m.def("make", &make, nb::arg("kind"), nb::arg("hp"), nb::arg("adamw_hp"), nb::arg("names"), nb::arg("roles"),
        nb::arg("params").noconvert(), nb::arg("geometries") = std::vector<std::string>{},
        "The named optimizer `kind` over `params` (float32 CPU arrays, viewed in place); a non-empty "
        "geometries[i] (\"row\", \"mean_spectral\", ...) overrides tensor i's geometry.");
  m.def("make_cuda", &make_cuda, nb::arg("kind"), nb::arg("hp"), nb::arg("adamw_hp"), nb::arg("names"), nb::arg("roles"),
        nb::arg("addresses"), nb::arg("shapes"), nb::arg("geometries"), nb::arg("device"), nb::arg("stream"),
        "The named optimizer `kind` over float32 tensors in CUDA device `device`'s memory (their addresses and "
        "shapes), its steps enqueued on `stream` until use_stream changes it");
#ifdef STEEPEST_PYTHON_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
  // The geometries on one array (float32 or float64, CPU, C-contiguous; a tensor of more than
  // two dimensions is the matrix first dimension x the rest, as the optimizers step it).
  m.def("dualize", &dualize_into<float>, nb::arg("g").noconvert(), nb::arg("out").noconvert(), nb::arg("geometry"),
        nb::arg("mean"));
  m.def("dualize", &dualize_into<double>, nb::arg("g").noconvert(), nb::arg("out").noconvert(), nb::arg("geometry"),
        nb::arg("mean"), "out <- D(g), the geometry's steepest direction (its scale s(m, n) included when mean)");
  m.def("norm", &norm_of<float>, nb::arg("w").noconvert(), nb::arg("geometry"), nb::arg("mean"), nb::arg("dual"));
  m.def("norm", &norm_of<double>, nb::arg("w").noconvert(), nb::arg("geometry"), nb::arg("mean"), nb::arg("dual"),
        "||w|| in the geometry, or its dual norm ||w||_* when dual");
  // The process's Newton-Schulz engine planner (polar/planner.hpp), which Muon's default engine
  // consults: its choices, and the settings a run that must repeat bit for bit uses.
  nb::class_<st::PolarPlanner>(m, "PolarPlanner")
      .def(
          "plans",
          [](const st::PolarPlanner& p) {
            nb::list out;
            for (const auto& plan : p.plans()) {
              nb::list candidates;
              for (const auto& [name, secs, dist, ok] : plan.candidates)
                candidates.append(nb::make_tuple(name, secs, dist, ok));
              nb::dict d;
              d["shape"] = nb::make_tuple(plan.k, plan.l);
              d["threads"] = plan.threads;
              d["schedule"] = plan.schedule;
              d["steps"] = plan.steps;
              d["engine"] = plan.engine;
              d["how"] = plan.how;
              d["candidates"] = candidates;
              d["text"] = plan.describe();
              out.append(d);
            }
            return out;
          },
          "Every choice made: dicts with shape (k, l), threads, engine, how, candidates "
          "[(name, seconds, distance, accepted)] and text")
      .def(
          "set_mode",
          [](st::PolarPlanner& p, const std::string& mode) {
            if (mode != "measure" && mode != "estimate")
              throw std::invalid_argument("steepest: the planner's mode is 'measure' or 'estimate', not '" + mode + "'");
            p.set_mode(mode == "measure" ? st::PlanMode::Measure : st::PlanMode::Estimate);
          },
          nb::arg("mode"), "'measure' (time each engine once per shape) or 'estimate' (fewest flops)")
      .def("force", &st::PolarPlanner::force, nb::arg("engine"),
           "Always use the engine of this name ('eigen', 'gram-restart3', ...); '' plans again")
      .def("set_tolerance", &st::PolarPlanner::set_tolerance, nb::arg("distance"))
      .def("clear", &st::PolarPlanner::clear, "Forget every choice")
      .def("save", &st::PolarPlanner::save, nb::arg("path"), "Write the measured and estimated choices")
      .def("load", &st::PolarPlanner::load, nb::arg("path"), "Replace the choices by a file's")
      .def("set_file", &st::PolarPlanner::set_file, nb::arg("path"),
           "Load `path` when it exists and rewrite it after each new choice (as STEEPEST_POLAR_PLAN)")
      .def_static("cpu_model", &st::PolarPlanner::cpu_model);
  m.def("polar_planner", &st::polar_planner, nb::rv_policy::reference, "The process's Newton-Schulz engine planner");
  m.def("geometry_name", [](const std::string& g, bool mean) { return geometry_fns(g, mean).name(); },
        nb::arg("geometry"), nb::arg("mean"), "The policy's name, as optimizers report it");
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const st::shape_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const st::non_finite_error& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    } catch (const dtype_error& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });
}
