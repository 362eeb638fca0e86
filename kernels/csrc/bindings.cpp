// Torch bindings: check shapes and dtypes, take raw pointers, launch on the current stream.
// Every buffer is owned by the caller (cuda_rasterizer.py), so a frame allocates nothing.
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <chrono>
#include <thread>

#include "rasterizer.h"

namespace splatcast {

namespace {

void check_cuda(cudaError_t error, const char* stage) {
    TORCH_CHECK(error == cudaSuccess, "splatcast ", stage, ": ", cudaGetErrorString(error));
}

void check_buffer(const torch::Tensor& t, torch::ScalarType dtype, int64_t min_numel, const char* name) {
    TORCH_CHECK(t.is_cuda() && t.is_contiguous(), name, " must be a contiguous CUDA tensor");
    TORCH_CHECK(t.scalar_type() == dtype, name, " has dtype ", t.scalar_type(), ", expected ", dtype);
    TORCH_CHECK(t.numel() >= min_numel, name, " holds ", t.numel(), " elements, needs ", min_numel);
}

template <typename T>
T* ptr(const torch::Tensor& t) {
    return reinterpret_cast<T*>(t.data_ptr());
}

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

constexpr int64_t VIEW_FLOATS = sizeof(ViewParams) / sizeof(float);

void preprocess(const torch::Tensor& means_opacity, const torch::Tensor& shape, const torch::Tensor& sh, int64_t sh_degree,
                const torch::Tensor& views, int64_t width, int64_t height, const torch::Tensor& splats,
                const torch::Tensor& depth_keys, const torch::Tensor& entry_ids, const torch::Tensor& tile_counts) {
    const c10::cuda::CUDAGuard guard(means_opacity.device());
    const int64_t n = means_opacity.size(0), v = views.size(0), entries = n * v;
    check_buffer(means_opacity, torch::kFloat32, 4 * n, "means_opacity");
    TORCH_CHECK(shape.scalar_type() == sh.scalar_type(), "shape and sh must share a storage dtype");
    const bool half = shape.scalar_type() == torch::kFloat16;
    check_buffer(shape, half ? torch::kFloat16 : torch::kFloat32, 8 * n, "shape");
    TORCH_CHECK(sh.dim() == 2 && sh.size(0) == n, "sh must be (N, stride)");
    check_buffer(sh, shape.scalar_type(), 0, "sh");
    TORCH_CHECK(sh.size(1) >= 3 * (sh_degree + 1) * (sh_degree + 1), "sh rows too short for degree ", sh_degree);
    check_buffer(views, torch::kFloat32, v * VIEW_FLOATS, "views");
    check_buffer(splats, torch::kFloat32, 8 * entries, "splats");
    check_buffer(depth_keys, torch::kInt32, entries, "depth_keys");
    check_buffer(entry_ids, torch::kInt32, entries, "entry_ids");
    check_buffer(tile_counts, torch::kInt32, entries, "tile_counts");
    PreprocessArgs args{};
    args.num_gaussians = static_cast<int>(n);
    args.num_views = static_cast<int>(v);
    args.width = static_cast<int>(width);
    args.height = static_cast<int>(height);
    args.sh_degree = static_cast<int>(sh_degree);
    args.sh_stride = static_cast<int>(sh.size(1));
    args.half_storage = half;
    args.means_opacity = ptr<const float4>(means_opacity);
    args.shape = shape.data_ptr();
    args.sh = sh.data_ptr();
    args.views = ptr<const ViewParams>(views);
    args.splats = ptr<float4>(splats);
    args.depth_keys = ptr<uint32_t>(depth_keys);
    args.entry_ids = ptr<uint32_t>(entry_ids);
    args.tile_counts = ptr<uint32_t>(tile_counts);
    check_cuda(launch_preprocess(args, stream()), "preprocess");
}

int checked_count(int64_t n, const char* what) {
    TORCH_CHECK(n >= 0 && n < (int64_t{1} << 31), what, " count ", n, " does not fit the 32-bit sorts");
    return static_cast<int>(n);
}

// Pair keys are int16 where every tile key of the batch is under 0xffff (all bits set marks an
// unused slot), else int32; the caller picks, these check.
bool short_keys(const torch::Tensor& keys, int64_t n, const char* name) {
    const bool is_short = keys.scalar_type() == torch::kInt16;
    check_buffer(keys, is_short ? torch::kInt16 : torch::kInt32, n, name);
    return is_short;
}

int64_t sort_temp_bytes(int64_t num_entries_, int64_t num_pairs_, int64_t pair_bits, bool short_pair_keys, int64_t num_tiles_) {
    const int num_entries = checked_count(num_entries_, "entry"), num_pairs = checked_count(num_pairs_, "pair");
    const int num_tiles = checked_count(num_tiles_, "tile");
    size_t depth = 0, scan = 0, pairs = 0, tiles = 0;
    const int bits = static_cast<int>(pair_bits);
    // The most depth-key bits: the size that fits every pass count.
    check_cuda(depth_sort(nullptr, &depth, nullptr, nullptr, nullptr, nullptr, num_entries, 31, 0), "depth sort size");
    check_cuda(tile_count_ends(nullptr, &scan, nullptr, nullptr, nullptr, num_entries, 0), "scan size");
    check_cuda(short_pair_keys ? pair_sort<uint16_t>(nullptr, &pairs, nullptr, nullptr, nullptr, nullptr, num_pairs, bits, 0)
                               : pair_sort<uint32_t>(nullptr, &pairs, nullptr, nullptr, nullptr, nullptr, num_pairs, bits, 0),
               "pair sort size");
    check_cuda(tile_sort(nullptr, &tiles, nullptr, nullptr, nullptr, nullptr, num_tiles, 0), "tile sort size");
    return static_cast<int64_t>(std::max({depth, scan, pairs, tiles}));
}

void sort_depths(const torch::Tensor& temp, const torch::Tensor& keys_in, const torch::Tensor& entries_in,
                 const torch::Tensor& keys_out, const torch::Tensor& entries_out, int64_t n, int64_t key_bits) {
    TORCH_CHECK(key_bits > 0 && key_bits <= 31, "depth keys hold 1 to 31 bits, got ", key_bits);
    const c10::cuda::CUDAGuard guard(temp.device());
    for (const auto* t : {&keys_in, &entries_in, &keys_out, &entries_out}) check_buffer(*t, torch::kInt32, n, "depth sort buffer");
    check_buffer(temp, torch::kUInt8, 0, "temp");
    if (n == 0) return;
    size_t bytes = temp.numel();
    check_cuda(depth_sort(temp.data_ptr(), &bytes, ptr<const uint32_t>(keys_in), ptr<uint32_t>(keys_out),
                          ptr<const uint32_t>(entries_in), ptr<uint32_t>(entries_out), checked_count(n, "entry"),
                          static_cast<int>(key_bits), stream()),
               "depth sort");
}

void scan_tile_counts(const torch::Tensor& temp, const torch::Tensor& entries_sorted, const torch::Tensor& tile_counts,
                      const torch::Tensor& ends, int64_t n) {
    const c10::cuda::CUDAGuard guard(temp.device());
    check_buffer(entries_sorted, torch::kInt32, n, "entries_sorted");
    check_buffer(tile_counts, torch::kInt32, n, "tile_counts");
    check_buffer(ends, torch::kInt64, n, "ends");
    check_buffer(temp, torch::kUInt8, 0, "temp");
    if (n == 0) return;
    size_t bytes = temp.numel();
    check_cuda(tile_count_ends(temp.data_ptr(), &bytes, ptr<const uint32_t>(entries_sorted), ptr<const uint32_t>(tile_counts),
                               ptr<int64_t>(ends), checked_count(n, "entry"), stream()),
               "scan");
}

void emit_pairs(const torch::Tensor& entries_sorted, const torch::Tensor& ends, const torch::Tensor& splats,
                int64_t num_entries, int64_t num_gaussians,
                int64_t width, int64_t height, int64_t base, int64_t capacity, const torch::Tensor& pair_keys,
                const torch::Tensor& pair_values) {
    const c10::cuda::CUDAGuard guard(ends.device());
    check_buffer(entries_sorted, torch::kInt32, num_entries, "entries_sorted");
    check_buffer(ends, torch::kInt64, num_entries, "ends");
    check_buffer(splats, torch::kFloat32, 8 * num_entries, "splats");
    const bool is_short = short_keys(pair_keys, capacity, "pair_keys");
    check_buffer(pair_values, torch::kInt32, capacity, "pair_values");
    EmitArgs args{};
    args.num_entries = num_entries;
    args.num_gaussians = static_cast<int>(num_gaussians);
    args.width = static_cast<int>(width);
    args.height = static_cast<int>(height);
    args.entries_sorted = ptr<const uint32_t>(entries_sorted);
    args.ends = ptr<const int64_t>(ends);
    args.splats = ptr<const float4>(splats);
    args.base = base;
    args.capacity = capacity;
    args.pair_keys = pair_keys.data_ptr();
    args.short_keys = is_short;
    args.pair_values = ptr<uint32_t>(pair_values);
    check_cuda(launch_emit_pairs(args, stream()), "emit pairs");
}

void sort_pairs(const torch::Tensor& temp, const torch::Tensor& keys_in, const torch::Tensor& values_in,
                const torch::Tensor& keys_out, const torch::Tensor& values_out, int64_t n, int64_t key_bits) {
    const c10::cuda::CUDAGuard guard(temp.device());
    const bool is_short = short_keys(keys_in, n, "pair keys");
    TORCH_CHECK(short_keys(keys_out, n, "sorted pair keys") == is_short, "pair keys in and out differ in dtype");
    for (const auto* t : {&values_in, &values_out}) check_buffer(*t, torch::kInt32, n, "pair sort buffer");
    check_buffer(temp, torch::kUInt8, 0, "temp");
    if (n == 0) return;
    size_t bytes = temp.numel();
    const int count = checked_count(n, "pair"), bits = static_cast<int>(key_bits);
    const auto* v_in = ptr<const uint32_t>(values_in);
    auto* v_out = ptr<uint32_t>(values_out);
    check_cuda(is_short ? pair_sort(temp.data_ptr(), &bytes, ptr<const uint16_t>(keys_in), ptr<uint16_t>(keys_out), v_in, v_out,
                                    count, bits, stream())
                        : pair_sort(temp.data_ptr(), &bytes, ptr<const uint32_t>(keys_in), ptr<uint32_t>(keys_out), v_in, v_out,
                                    count, bits, stream()),
               "pair sort");
}

void tile_ranges(const torch::Tensor& keys_sorted, int64_t n, const torch::Tensor& ranges) {
    const c10::cuda::CUDAGuard guard(keys_sorted.device());
    const bool is_short = short_keys(keys_sorted, n, "keys_sorted");
    TORCH_CHECK(ranges.dim() == 2 && ranges.size(1) == 2, "ranges must be (tiles, 2)");
    check_buffer(ranges, torch::kInt32, 0, "ranges");
    TORCH_CHECK(!is_short || ranges.size(0) < 0xffff, "16-bit pair keys hold under 0xffff tiles, got ", ranges.size(0));
    check_cuda(launch_tile_ranges(n, static_cast<uint32_t>(ranges.size(0)), keys_sorted.data_ptr(), is_short, ptr<int2>(ranges),
                                  stream()),
               "tile ranges");
}

void order_tiles(const torch::Tensor& temp, const torch::Tensor& ranges, const torch::Tensor& loads,
                 const torch::Tensor& tiles, const torch::Tensor& loads_sorted, const torch::Tensor& tile_order) {
    const c10::cuda::CUDAGuard guard(ranges.device());
    const int64_t n = ranges.size(0);
    check_buffer(ranges, torch::kInt32, 2 * n, "ranges");
    for (const auto* t : {&loads, &tiles, &loads_sorted, &tile_order}) check_buffer(*t, torch::kInt32, n, "tile order buffer");
    check_buffer(temp, torch::kUInt8, 0, "temp");
    check_cuda(launch_tile_loads(static_cast<uint32_t>(n), ptr<const int2>(ranges), ptr<uint32_t>(loads), ptr<uint32_t>(tiles),
                                 stream()),
               "tile loads");
    size_t bytes = temp.numel();
    check_cuda(tile_sort(temp.data_ptr(), &bytes, ptr<const uint32_t>(loads), ptr<uint32_t>(loads_sorted),
                         ptr<const uint32_t>(tiles), ptr<uint32_t>(tile_order), checked_count(n, "tile"), stream()),
               "tile sort");
}

// cudaMemcpyAsync between two tensors' storage on the current stream: a copy to or from pinned
// host memory that a CUDA graph can capture, with no caching-allocator bookkeeping.
void copy(const torch::Tensor& dst, const torch::Tensor& src) {
    TORCH_CHECK(dst.is_contiguous() && src.is_contiguous() && dst.nbytes() >= src.nbytes(), "copy needs contiguous tensors, dst large enough");
    TORCH_CHECK((dst.is_cuda() || dst.is_pinned()) && (src.is_cuda() || src.is_pinned()), "copy needs CUDA or pinned tensors");
    check_cuda(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), src.nbytes(), cudaMemcpyDefault, stream()), "copy");
}

// A captured frame's cudaGraphExec_t (torch.cuda.CUDAGraph.raw_cuda_graph_exec), launched on the
// current stream.
void launch_graph(int64_t graph_exec) {
    check_cuda(cudaGraphLaunch(reinterpret_cast<cudaGraphExec_t>(graph_exec), stream()), "graph launch");
}

// The two timing events around a frame, recorded on the current stream from C++ (torch's
// Event.record looks the stream up in Python, ~10 us a call on the GPU host), and the wait for
// the frame's end: see wait().
class FrameEvents {
public:
    FrameEvents() {
        check_cuda(cudaEventCreate(&start_), "event");
        check_cuda(cudaEventCreate(&done_), "event");
    }
    ~FrameEvents() {
        cudaEventDestroy(start_);
        cudaEventDestroy(done_);
    }
    FrameEvents(const FrameEvents&) = delete;
    FrameEvents& operator=(const FrameEvents&) = delete;

    void start() { check_cuda(cudaEventRecord(start_, stream()), "record"); }

    // Mark the frame's end and wait for it, seeing it at once without holding a core for the
    // whole frame: sleep for sleep_us (the caller's estimate of the time left, short of the
    // end), poll for spin_us, then poll every poll_us between short sleeps. Returns how much later
    // than asked the sleep ended (the host's wake-up latency, which the caller leaves out of the
    // next sleep), or -1 where it did not sleep. No blocking-sync wait: waking from one took
    // 0.3-0.4 ms on the H200 host. Called without the GIL.
    double wait(double sleep_us, double spin_us, double poll_us) {
        using clock = std::chrono::steady_clock;
        using micros = std::chrono::duration<double, std::micro>;
        check_cuda(cudaEventRecord(done_, stream()), "record");
        double overshoot_us = -1.0;
        cudaError_t state = cudaEventQuery(done_);
        if (state == cudaErrorNotReady && sleep_us > 0) {
            const auto start = clock::now();
            std::this_thread::sleep_for(micros(sleep_us));
            overshoot_us = micros(clock::now() - start).count() - sleep_us;
            state = cudaEventQuery(done_);
        }
        const auto deadline = clock::now() + micros(spin_us);
        while (state == cudaErrorNotReady && clock::now() < deadline) state = cudaEventQuery(done_);
        while (state == cudaErrorNotReady) {
            std::this_thread::sleep_for(micros(poll_us));
            state = cudaEventQuery(done_);
        }
        check_cuda(state, "wait");
        return overshoot_us;
    }

    // GPU microseconds from start() to the end wait() waited for.
    double gpu_us() const {
        float ms = 0.0f;
        check_cuda(cudaEventElapsedTime(&ms, start_, done_), "elapsed time");
        return 1000.0 * ms;
    }

private:
    cudaEvent_t start_ = nullptr, done_ = nullptr;
};

void blend(const torch::Tensor& ranges, const c10::optional<torch::Tensor>& tile_order, const torch::Tensor& values,
           const torch::Tensor& splats, int64_t num_entries, const torch::Tensor& background, int64_t num_views, int64_t width, int64_t height,
           const torch::Tensor& image_slot, const c10::optional<torch::Tensor>& state, bool resume, bool final) {
    const c10::cuda::CUDAGuard guard(ranges.device());
    const int64_t tiles = (width + TILE - 1) / TILE * ((height + TILE - 1) / TILE);
    check_buffer(ranges, torch::kInt32, 2 * num_views * tiles, "ranges");
    check_buffer(values, torch::kInt32, 0, "values");
    if (tile_order) check_buffer(*tile_order, torch::kInt32, num_views * tiles, "tile_order");
    check_buffer(splats, torch::kFloat32, 8 * num_entries, "splats");
    check_buffer(background, torch::kFloat32, 3, "background");
    // The image's address, read by the kernel: the caller writes it with each frame's inputs and
    // owns the (V, H, W, 3) buffer it names.
    check_buffer(image_slot, torch::kInt64, 1, "image_slot");
    TORCH_CHECK(final || state.has_value(), "a chunk that is not final needs a state buffer");
    TORCH_CHECK(!resume || state.has_value(), "resuming needs a state buffer");
    if (state) check_buffer(*state, torch::kFloat32, 4 * num_views * height * width, "state");
    BlendArgs args{};
    args.num_views = static_cast<int>(num_views);
    args.width = static_cast<int>(width);
    args.height = static_cast<int>(height);
    args.ranges = ptr<const int2>(ranges);
    args.values = ptr<const uint32_t>(values);
    args.tile_order = tile_order ? ptr<const uint32_t>(*tile_order) : nullptr;
    args.splats = ptr<const float4>(splats);
    args.num_entries = num_entries;
    args.background = ptr<const float>(background);
    args.image_slot = ptr<uint8_t* const>(image_slot);
    args.state = state ? ptr<float4>(*state) : nullptr;
    args.resume = resume;
    args.final = final;
    check_cuda(launch_blend(args, stream()), "blend");
}

void rgb_to_i420(const torch::Tensor& image, const torch::Tensor& layout, const torch::Tensor& out) {
    const c10::cuda::CUDAGuard guard(image.device());
    TORCH_CHECK(image.dim() == 4 && image.size(3) == 3, "image must be (V, H, W, 3)");
    check_buffer(image, torch::kUInt8, 0, "image");
    const int64_t v = image.size(0), h = image.size(1), w = image.size(2);
    TORCH_CHECK(h % 2 == 0 && w % 2 == 0, "I420 needs even view sizes, got ", w, "x", h);
    check_buffer(layout, torch::kInt64, 3 * v, "layout");
    check_buffer(out, torch::kUInt8, v * h * w * 3 / 2, "out");
    I420Args args{};
    args.num_views = static_cast<int>(v);
    args.width = static_cast<int>(w);
    args.height = static_cast<int>(h);
    args.image = ptr<const uint8_t>(image);
    args.layout = ptr<const int64_t>(layout);
    args.out = ptr<uint8_t>(out);
    check_cuda(launch_rgb_to_i420(args, stream()), "rgb to i420");
}

}  // namespace

}  // namespace splatcast

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    using namespace splatcast;
    m.attr("TILE") = TILE;
    m.attr("VIEW_FLOATS") = VIEW_FLOATS;
    m.def("preprocess", &preprocess);
    m.def("sort_temp_bytes", &sort_temp_bytes);
    m.def("sort_depths", &sort_depths);
    m.def("scan_tile_counts", &scan_tile_counts);
    m.def("emit_pairs", &emit_pairs);
    m.def("sort_pairs", &sort_pairs);
    m.def("tile_ranges", &tile_ranges);
    m.def("order_tiles", &order_tiles);
    m.def("copy", &copy);
    m.def("launch_graph", &launch_graph);
    pybind11::class_<FrameEvents>(m, "FrameEvents")
        .def(pybind11::init<>())
        .def("start", &FrameEvents::start)
        .def("wait", &FrameEvents::wait, pybind11::call_guard<pybind11::gil_scoped_release>())
        .def("gpu_us", &FrameEvents::gpu_us);
    m.def("blend", &blend);
    m.def("rgb_to_i420", &rgb_to_i420);
}
