// Stage 3: per-tile front-to-back blending, one 16x16 block per tile of every view.
//
// The block stages its tile's splats through shared memory BLOCK at a time; each thread walks
// them for its pixel and stops at the first splat that would take its transmittance under
// TRANSMITTANCE_MIN (that splat is not blended), and the block stops once every pixel has.
//
// WARP_CULL: each warp owns an 8x4 pixel rectangle of the tile and first tests the staged
// splats against it, 32 at a time with one ballot, then walks only those whose opacity-aware
// ellipse meets its rectangle. Avatar splats span a few pixels, so most of a 16x16 tile's list
// misses any one warp: this trades one ellipse test per splat and warp for most of the
// per-pixel evaluations.
#include "rasterizer.h"

namespace splatcast {

namespace {

constexpr unsigned FULL_MASK = 0xffffffffu;

__device__ inline float2 unpack_half2(float bits) {
    return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}

struct Pixel {
    float x, y;  // centre, pixels
    float3 colour;
    float transmittance;
    bool done;

    // One splat over this pixel, exactly as reference.blend_slice.
    __device__ inline void blend(float4 a, float4 b, float blue) {
        const float dx = x - a.x, dy = y - a.y;
        const float power = -0.5f * (a.z * dx * dx + b.x * dy * dy) - a.w * dx * dy;
        if (power > 0.0f) return;
        const float alpha = fminf(ALPHA_MAX, b.y * __expf(power));
        if (alpha < ALPHA_MIN) return;
        const float next = transmittance * (1.0f - alpha);
        if (next < TRANSMITTANCE_MIN) {
            done = true;
            return;
        }
        const float weight = alpha * transmittance;
        colour.x += weight * b.z;
        colour.y += weight * b.w;
        colour.z += weight * blue;
        transmittance = next;
    }
};

template <bool WARP_CULL>
__global__ void __launch_bounds__(BLOCK) blend_kernel(BlendArgs args) {
    const int tiles_x = gridDim.x, tiles_y = gridDim.y;
    const int view = blockIdx.z;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    // Warp w covers an 8x4 rectangle (WARP_CULL) or two full rows of the tile.
    const int local_x = WARP_CULL ? (warp % 2) * 8 + lane % 8 : threadIdx.x % TILE;
    const int local_y = WARP_CULL ? (warp / 2) * 4 + lane / 8 : threadIdx.x / TILE;
    const int x = blockIdx.x * TILE + local_x, y = blockIdx.y * TILE + local_y;
    const bool inside = x < args.width && y < args.height;
    const int64_t pixel_index = (static_cast<int64_t>(view) * args.height + y) * args.width + x;

    Pixel pixel{x + 0.5f, y + 0.5f, make_float3(0.0f, 0.0f, 0.0f), 1.0f, !inside};
    if (args.resume && inside) {
        const float4 s = args.state[pixel_index];
        pixel.colour = make_float3(s.x, s.y, s.z);
        pixel.done = s.w < 0.0f;
        pixel.transmittance = fabsf(s.w);
    }

    __shared__ float4 shared_a[BLOCK];  // mean x, y, conic a, b
    __shared__ float4 shared_b[BLOCK];  // conic c, opacity, r, g
    __shared__ float shared_blue[BLOCK];
    __shared__ float4 shared_footprint[WARP_CULL ? BLOCK : 1];

    // This warp's rectangle of pixel centres.
    const float rect_x0 = blockIdx.x * TILE + (warp % 2) * 8 + 0.5f, rect_y0 = blockIdx.y * TILE + (warp / 2) * 4 + 0.5f;

    const int2 range = args.ranges[(view * tiles_y + blockIdx.y) * tiles_x + blockIdx.x];
    for (int batch_begin = range.x; batch_begin < range.y; batch_begin += BLOCK) {
        // Also the barrier that lets the previous batch's shared data be overwritten.
        if (__syncthreads_count(pixel.done) == BLOCK) break;
        const int index = batch_begin + threadIdx.x;
        if (index < range.y) {
            const uint32_t entry = args.values[index];
            const float4 b = args.splat_b[entry];
            const float2 rg = unpack_half2(b.z), b0 = unpack_half2(b.w);
            shared_a[threadIdx.x] = args.splat_a[entry];
            shared_b[threadIdx.x] = make_float4(b.x, b.y, rg.x, rg.y);
            shared_blue[threadIdx.x] = b0.x;
            if (WARP_CULL) shared_footprint[threadIdx.x] = args.footprint[entry];
        }
        __syncthreads();
        const int batch_size = min(BLOCK, range.y - batch_begin);
        if (WARP_CULL) {
            for (int first = 0; first < batch_size; first += 32) {
                if (__all_sync(FULL_MASK, pixel.done)) break;
                const int j = first + lane;
                const bool meets = j < batch_size && ellipse_meets_rect(shared_a[j].x, shared_a[j].y, shared_footprint[j], rect_x0,
                                                                        rect_x0 + 7.0f, rect_y0, rect_y0 + 3.0f);
                for (unsigned hits = __ballot_sync(FULL_MASK, meets); hits != 0; hits &= hits - 1) {
                    const int k = first + __ffs(hits) - 1;
                    if (!pixel.done) pixel.blend(shared_a[k], shared_b[k], shared_blue[k]);
                }
            }
        } else {
            for (int j = 0; !pixel.done && j < batch_size; ++j) pixel.blend(shared_a[j], shared_b[j], shared_blue[j]);
        }
    }

    if (!inside) return;
    if (!args.final) {
        args.state[pixel_index] = make_float4(pixel.colour.x, pixel.colour.y, pixel.colour.z,
                                              pixel.done ? -pixel.transmittance : pixel.transmittance);
        return;
    }
    // As reference.to_uint8: round half up, clamp to [0, 255].
    const float t = pixel.transmittance;
    const float rgb[3] = {pixel.colour.x + t * args.background[0], pixel.colour.y + t * args.background[1],
                          pixel.colour.z + t * args.background[2]};
    uint8_t* out = args.image + 3 * pixel_index;
#pragma unroll
    for (int ch = 0; ch < 3; ++ch) out[ch] = static_cast<uint8_t>(fminf(fmaxf(rgb[ch] * 255.0f + 0.5f, 0.0f), 255.0f));
}

}  // namespace

cudaError_t launch_blend(const BlendArgs& args, cudaStream_t stream) {
    if (args.num_views == 0) return cudaSuccess;
    const dim3 grid(tiles_along(args.width), tiles_along(args.height), args.num_views);
    if (args.warp_cull) {
        blend_kernel<true><<<grid, BLOCK, 0, stream>>>(args);
    } else {
        blend_kernel<false><<<grid, BLOCK, 0, stream>>>(args);
    }
    return cudaGetLastError();
}

}  // namespace splatcast
