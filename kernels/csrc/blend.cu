// Stage 3: per-tile front-to-back blending, one 256-thread block per 16x16 tile of every view.
//
// The block stages its tile's splats through shared memory BLOCK at a time; each thread walks
// them for its pixel and stops at the first splat that would take its transmittance under
// TRANSMITTANCE_MIN (that splat is not blended), and the block stops once every pixel has.
//
// Each warp owns an 8x4 rectangle of the tile. Staging a splat also tests its opacity-aware
// ellipse against the 8 rectangles (four row bands, two column halves), and each warp then
// walks only the splats that meet its rectangle: avatar splats span a few pixels, so most of a
// tile's list misses any one warp. The next batch's records are loaded while this one blends,
// and each thread computes the opacities of several splats at once before compositing them in
// order: the transmittance chain is then a multiply per splat, not the whole evaluation.
#include "rasterizer.h"

namespace splatcast {

namespace {

constexpr unsigned FULL_MASK = 0xffffffffu;
constexpr int ILP = 4;  // splats whose opacities one thread computes together

__device__ inline float2 unpack_half2(float bits) {
    return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}

// Opacity of splat (a, b) at pixel centre (x, y), or 0 where the reference skips it (outside
// the Gaussian's support or under ALPHA_MIN): independent of the pixel's state, so several are
// computed at once while the state updates stay in depth order.
__device__ inline float alpha_at(float x, float y, float4 a, float4 b) {
    const float dx = x - a.x, dy = y - a.y;
    const float power = -0.5f * (a.z * dx * dx + b.x * dy * dy) - a.w * dx * dy;
    const float alpha = fminf(ALPHA_MAX, b.y * __expf(power));
    return power > 0.0f || alpha < ALPHA_MIN ? 0.0f : alpha;
}

struct Pixel {
    float x, y;  // centre, pixels
    float3 colour;
    float transmittance;
    bool done;

    // Front-to-back compositing of one splat, exactly as reference.blend_slice: stop before
    // the splat that would take the transmittance under TRANSMITTANCE_MIN.
    __device__ inline void composite(float alpha, float red, float green, float blue) {
        if (done || alpha == 0.0f) return;
        const float next = transmittance * (1.0f - alpha);
        if (next < TRANSMITTANCE_MIN) {
            done = true;
            return;
        }
        const float weight = alpha * transmittance;
        colour.x += weight * red;
        colour.y += weight * green;
        colour.z += weight * blue;
        transmittance = next;
    }
};

// Bit w set when the splat's footprint holds a pixel centre of warp w's rectangle: columns
// [8 (w % 2), +8), rows [4 (w / 2), +4) of the tile whose first pixel centre is (x0, y0).
__device__ inline uint32_t warp_mask(float4 a, float4 b, float x0, float y0) {
    const float4 f = footprint_of(a, b);
    uint32_t mask = 0;
#pragma unroll
    for (int band = 0; band < 4; ++band) {
        float left, right;
        const float band_y = y0 + 4 * band - a.y;
        if (!ellipse_band_extent(f.x, f.y, f.z, f.w, band_y - FOOTPRINT_MARGIN, band_y + 3.0f + FOOTPRINT_MARGIN, left, right))
            continue;
        left += a.x - FOOTPRINT_MARGIN;
        right += a.x + FOOTPRINT_MARGIN;
        if (left <= x0 + 7.0f && right >= x0) mask |= 1u << (2 * band);
        if (left <= x0 + 15.0f && right >= x0 + 8.0f) mask |= 2u << (2 * band);
    }
    return mask;
}

__global__ void __launch_bounds__(BLOCK) blend_kernel(BlendArgs args) {
    const int tiles_x = tiles_along(args.width), tiles_per_view = tiles_x * tiles_along(args.height);
    const uint32_t tile = args.tile_order ? args.tile_order[blockIdx.x] : blockIdx.x;
    const int view = tile / tiles_per_view;
    const int tile_x = tile % tiles_per_view % tiles_x, tile_y = tile % tiles_per_view / tiles_x;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int x = tile_x * TILE + (warp % 2) * 8 + lane % 8;
    const int y = tile_y * TILE + (warp / 2) * 4 + lane / 8;
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
    __shared__ uint8_t shared_mask[BLOCK];  // warps whose rectangle the splat meets
    const float tile_x0 = tile_x * TILE + 0.5f, tile_y0 = tile_y * TILE + 0.5f;

    const int2 range = args.ranges[tile];
    int index = range.x + threadIdx.x;
    float4 next_a, next_b;
    if (index < range.y) {
        const int64_t entry = args.values[index];
        next_a = args.splats[2 * entry];
        next_b = args.splats[2 * entry + 1];
    }
    for (int batch_begin = range.x; batch_begin < range.y; batch_begin += BLOCK) {
        // Also the barrier that lets the previous batch's shared data be overwritten.
        if (__syncthreads_count(pixel.done) == BLOCK) break;
        if (index < range.y) {
            const float2 rg = unpack_half2(next_b.z), b0 = unpack_half2(next_b.w);
            shared_a[threadIdx.x] = next_a;
            shared_b[threadIdx.x] = make_float4(next_b.x, next_b.y, rg.x, rg.y);
            shared_blue[threadIdx.x] = b0.x;
            shared_mask[threadIdx.x] = warp_mask(next_a, next_b, tile_x0, tile_y0);
        }
        index += BLOCK;
        if (index < range.y) {
            const int64_t entry = args.values[index];
            next_a = args.splats[2 * entry];
            next_b = args.splats[2 * entry + 1];
        }
        __syncthreads();
        const int batch_size = min(BLOCK, range.y - batch_begin);
        for (int first = 0; first < batch_size; first += 32) {
            if (__all_sync(FULL_MASK, pixel.done)) break;
            const int j = first + lane;
            const bool meets = j < batch_size && (shared_mask[j] >> warp & 1u);
            // ILP hits at a time: their opacities in parallel, then the state updates in order.
            for (unsigned hits = __ballot_sync(FULL_MASK, meets); hits != 0;) {
                int k[ILP];
                float alpha[ILP];
#pragma unroll
                for (int u = 0; u < ILP; ++u) {
                    k[u] = hits != 0 ? first + __ffs(hits) - 1 : -1;
                    hits &= hits - 1;
                    alpha[u] = k[u] >= 0 ? alpha_at(pixel.x, pixel.y, shared_a[k[u]], shared_b[k[u]]) : 0.0f;
                }
#pragma unroll
                for (int u = 0; u < ILP; ++u)
                    if (k[u] >= 0) pixel.composite(alpha[u], shared_b[k[u]].z, shared_b[k[u]].w, shared_blue[k[u]]);
            }
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
    const unsigned tiles = static_cast<unsigned>(args.num_views) * tiles_along(args.width) * tiles_along(args.height);
    if (tiles == 0) return cudaSuccess;
    blend_kernel<<<tiles, BLOCK, 0, stream>>>(args);
    return cudaGetLastError();
}

}  // namespace splatcast
