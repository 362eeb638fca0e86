// Stage 4: 8-bit RGB -> I420 (planar Y, U, V; chroma at half resolution), on the GPU.
//
// BT.601 limited range, as libswscale converts rgb24 -> yuv420p by default (kernels/colour.py is
// the reference), so that frames are what the CPU path hands the encoder. Each view is written
// straight into its frame, views of one frame side by side (the stereo layout of the pose
// protocol): one copy of the whole buffer to pinned host memory carries every frame of the batch.
#include "rasterizer.h"

namespace splatcast {

namespace {

__device__ inline uint8_t to_level(float value) { return static_cast<uint8_t>(fminf(fmaxf(value + 0.5f, 0.0f), 255.0f)); }

__device__ inline uint8_t luma(float r, float g, float b) {
    return to_level(16.0f + (65.481f * r + 128.553f * g + 24.966f * b) / 255.0f);
}

// One thread per 2x2 block of one view: its four luma samples and one chroma pair. Chroma as
// libswscale's default (see kernels/colour.py): the mean of each horizontal pixel pair, filtered
// over rows 2j-1 .. 2j+2 with taps (1, 3, 3, 1) / 8, edge rows repeated.
__global__ void rgb_to_i420_kernel(I420Args args) {
    const int half_w = args.width / 2, half_h = args.height / 2;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i >= static_cast<int64_t>(args.num_views) * half_w * half_h) return;
    const int view = static_cast<int>(i / (static_cast<int64_t>(half_w) * half_h));
    const int rest = static_cast<int>(i % (static_cast<int64_t>(half_w) * half_h));
    const int cx = rest % half_w, cy = rest / half_w;

    const int64_t frame_offset = args.layout[3 * view];
    const int64_t frame_width = args.layout[3 * view + 1];
    const int64_t column = args.layout[3 * view + 2];
    uint8_t* y_plane = args.out + frame_offset;
    uint8_t* u_plane = y_plane + frame_width * args.height;
    uint8_t* v_plane = u_plane + (frame_width / 2) * half_h;
    const uint8_t* view_image = args.image + static_cast<int64_t>(view) * args.height * args.width * 3;

    constexpr float TAPS[4] = {0.125f, 0.375f, 0.375f, 0.125f};
    float r = 0.0f, g = 0.0f, b = 0.0f;
#pragma unroll
    for (int tap = 0; tap < 4; ++tap) {
        const int row = min(max(2 * cy - 1 + tap, 0), args.height - 1);
        const uint8_t* rgb = view_image + 3 * (static_cast<int64_t>(row) * args.width + 2 * cx);
        const float r0 = rgb[0], g0 = rgb[1], b0 = rgb[2], r1 = rgb[3], g1 = rgb[4], b1 = rgb[5];
        if (tap == 1 || tap == 2) {
            uchar2 out;
            out.x = luma(r0, g0, b0);
            out.y = luma(r1, g1, b1);
            *reinterpret_cast<uchar2*>(y_plane + row * frame_width + column + 2 * cx) = out;
        }
        r += TAPS[tap] * 0.5f * (r0 + r1);
        g += TAPS[tap] * 0.5f * (g0 + g1);
        b += TAPS[tap] * 0.5f * (b0 + b1);
    }
    const int64_t chroma = cy * (frame_width / 2) + column / 2 + cx;
    u_plane[chroma] = to_level(128.0f + (-37.797f * r - 74.203f * g + 112.0f * b) / 255.0f);
    v_plane[chroma] = to_level(128.0f + (112.0f * r - 93.786f * g - 18.214f * b) / 255.0f);
}

}  // namespace

cudaError_t launch_rgb_to_i420(const I420Args& args, cudaStream_t stream) {
    const int64_t n = static_cast<int64_t>(args.num_views) * (args.width / 2) * (args.height / 2);
    if (n == 0) return cudaSuccess;
    rgb_to_i420_kernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(args);
    return cudaGetLastError();
}

}  // namespace splatcast
