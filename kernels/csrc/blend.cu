// Stage 3: per-tile front-to-back blending, one 16x16 block per tile of every view.
//
// The block stages its tile's splats through shared memory BLOCK at a time; each thread walks
// them for its pixel and stops at the first splat that would take its transmittance under
// TRANSMITTANCE_MIN (that splat is not blended), and the block stops once every pixel has.
#include "rasterizer.h"

namespace splatcast {

namespace {

__device__ inline float2 unpack_half2(float bits) {
    return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}

__global__ void __launch_bounds__(BLOCK) blend_kernel(BlendArgs args) {
    const int tiles_x = gridDim.x, tiles_y = gridDim.y;
    const int view = blockIdx.z;
    const int x = blockIdx.x * TILE + threadIdx.x % TILE;
    const int y = blockIdx.y * TILE + threadIdx.x / TILE;
    const bool inside = x < args.width && y < args.height;
    const int64_t pixel = (static_cast<int64_t>(view) * args.height + y) * args.width + x;
    const float pixel_x = x + 0.5f, pixel_y = y + 0.5f;

    float3 colour = make_float3(0.0f, 0.0f, 0.0f);
    float transmittance = 1.0f;
    bool done = !inside;
    if (args.resume && inside) {
        const float4 s = args.state[pixel];
        colour = make_float3(s.x, s.y, s.z);
        done = s.w < 0.0f;
        transmittance = fabsf(s.w);
    }

    __shared__ float4 shared_a[BLOCK];  // mean x, y, conic a, b
    __shared__ float4 shared_b[BLOCK];  // conic c, opacity, r, g
    __shared__ float shared_blue[BLOCK];

    const int2 range = args.ranges[(view * tiles_y + blockIdx.y) * tiles_x + blockIdx.x];
    for (int batch_begin = range.x; batch_begin < range.y; batch_begin += BLOCK) {
        // Also the barrier that lets the previous batch's shared data be overwritten.
        if (__syncthreads_count(done) == BLOCK) break;
        const int index = batch_begin + threadIdx.x;
        if (index < range.y) {
            const uint32_t entry = args.values[index];
            const float4 b = args.splat_b[entry];
            const float2 rg = unpack_half2(b.z), b0 = unpack_half2(b.w);
            shared_a[threadIdx.x] = args.splat_a[entry];
            shared_b[threadIdx.x] = make_float4(b.x, b.y, rg.x, rg.y);
            shared_blue[threadIdx.x] = b0.x;
        }
        __syncthreads();
        const int batch_size = min(BLOCK, range.y - batch_begin);
        for (int j = 0; !done && j < batch_size; ++j) {
            const float4 a = shared_a[j];
            const float4 b = shared_b[j];
            const float dx = pixel_x - a.x, dy = pixel_y - a.y;
            const float power = -0.5f * (a.z * dx * dx + b.x * dy * dy) - a.w * dx * dy;
            if (power > 0.0f) continue;
            const float alpha = fminf(ALPHA_MAX, b.y * __expf(power));
            if (alpha < ALPHA_MIN) continue;
            const float next = transmittance * (1.0f - alpha);
            if (next < TRANSMITTANCE_MIN) {
                done = true;
                break;
            }
            const float weight = alpha * transmittance;
            colour.x += weight * b.z;
            colour.y += weight * b.w;
            colour.z += weight * shared_blue[j];
            transmittance = next;
        }
    }

    if (!inside) return;
    if (!args.final) {
        args.state[pixel] = make_float4(colour.x, colour.y, colour.z, done ? -transmittance : transmittance);
        return;
    }
    // As reference.to_uint8: round half up, clamp to [0, 255].
    const float rgb[3] = {colour.x + transmittance * args.background[0], colour.y + transmittance * args.background[1],
                          colour.z + transmittance * args.background[2]};
    uint8_t* out = args.image + 3 * pixel;
#pragma unroll
    for (int ch = 0; ch < 3; ++ch) out[ch] = static_cast<uint8_t>(fminf(fmaxf(rgb[ch] * 255.0f + 0.5f, 0.0f), 255.0f));
}

}  // namespace

cudaError_t launch_blend(const BlendArgs& args, cudaStream_t stream) {
    if (args.num_views == 0) return cudaSuccess;
    const dim3 grid(tiles_along(args.width), tiles_along(args.height), args.num_views);
    blend_kernel<<<grid, BLOCK, 0, stream>>>(args);
    return cudaGetLastError();
}

}  // namespace splatcast
