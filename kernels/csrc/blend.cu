// Stage 3: per-tile front-to-back blending.
//
// A block blends one 8x8 quarter of a 16x16 tile: four blocks share each tile's list, which
// spreads the longest lists over four SMs and lets each quarter stop on its own. (Measured
// against whole-tile blocks: 0.60 vs 0.66 ms at 1M @ 1080p, 1.09 vs 1.23 ms at 16 x 720p.)
// A block stages the list's splats through shared memory 64 at a time; each thread walks them
// for its pixel and stops at the first splat that would take its transmittance under
// TRANSMITTANCE_MIN (that splat is not blended), and the block stops once every pixel has.
//
// Each warp owns an 8x4 rectangle and walks only the splats whose opacity-aware ellipse meets
// it: avatar splats span a few pixels, so most of a tile's list misses any one warp. Which
// rectangles a splat meets comes with its pair value (emission computed it, see common.h), so a
// block loads and stages only the splats that meet its quarter, each warp's batch compacted in
// list order; for batches too large to carry masks the block tests each splat itself. The next
// batch's values and records are loaded while this one blends.
#include "rasterizer.h"

namespace splatcast {

namespace {

constexpr unsigned FULL_MASK = 0xffffffffu;
constexpr int SIDE = 8;                  // pixels per block side
constexpr int THREADS = SIDE * SIDE;     // one per pixel: two warps of 8x4 pixels
constexpr int WARPS = THREADS / 32;
constexpr int BANDS = SIDE / WARP_ROWS;  // the block's warps, stacked
constexpr int PARTS = (TILE / SIDE) * (TILE / SIDE);
constexpr int ILP = 4;                   // splats whose opacities a thread computes together
constexpr float LOG2_E = 1.4426950408889634f;

__device__ inline float2 unpack_half2(float bits) {
    return __half22float2(*reinterpret_cast<const __half2*>(&bits));
}

// A staged splat, in the form that makes a pixel's opacity one exp2 of a quadratic:
// alpha = min(ALPHA_MAX, exp2(e + log2(opacity))) with e = qa dx^2 + qc dy^2 + qb dx dy the
// reference's power -q/2 in base 2.
struct Staged {
    float4 a;  // mean x, y; qa, qb
    float4 b;  // qc, log2(opacity), red, green
    float blue;
};

__device__ inline Staged stage(float4 a, float4 b) {
    const float2 rg = unpack_half2(b.z), b0 = unpack_half2(b.w);
    return {make_float4(a.x, a.y, -0.5f * LOG2_E * a.z, -LOG2_E * a.w),
            make_float4(-0.5f * LOG2_E * b.x, log2f(b.y), rg.x, rg.y), b0.x};
}

// Opacity of a staged splat at pixel centre (x, y), or 0 where the reference skips it (power
// > 0, or alpha under ALPHA_MIN). Independent of the pixel's state, so several are computed at
// once while the state updates stay in depth order.
__device__ inline float alpha_at(float x, float y, float4 a, float4 b) {
    const float dx = x - a.x, dy = y - a.y;
    const float e = a.z * dx * dx + b.x * dy * dy + a.w * dx * dy;
    const float alpha = fminf(ALPHA_MAX, exp2f(e + b.y));
    return e > 0.0f || alpha < ALPHA_MIN ? 0.0f : alpha;
}

struct Pixel {
    float x, y;  // centre, pixels
    float3 colour;
    float transmittance;
    bool live;  // inside the image and not yet saturated

    // Front-to-back compositing of one splat, as reference.blend_slice, without branches: most
    // lanes of a warp's hit see alpha 0, which leaves the pixel as it is (a weight of 0, and
    // transmittance times 1).
    __device__ inline void composite(float alpha, float red, float green, float blue) {
        const float next = transmittance * (1.0f - alpha);
        live = live && next >= TRANSMITTANCE_MIN;
        const float weight = live ? alpha * transmittance : 0.0f;
        colour.x += weight * red;
        colour.y += weight * green;
        colour.z += weight * blue;
        transmittance = live ? next : transmittance;
    }
};

// Blocks an SM that ptxas must fit, so registers a thread: blending is latency-bound (shared
// loads, exp2, each pixel's compositing chain), so more resident warps hide more of it. Left
// unbounded, ptxas takes 64 registers (16 blocks an SM); 18 blocks measured best of 16 to 24,
// on the H200 and the H100 (kernels/NOTES.md, v20 and v21).
#ifndef BLEND_MIN_BLOCKS
#define BLEND_MIN_BLOCKS 18
#endif

__global__ void __launch_bounds__(THREADS, BLEND_MIN_BLOCKS) blend_kernel(BlendArgs args) {
    const int tiles_x = tiles_along(args.width), tiles_per_view = tiles_x * tiles_along(args.height);
    const uint32_t tile = args.tile_order ? args.tile_order[blockIdx.x / PARTS] : blockIdx.x / PARTS;
    const int part = blockIdx.x % PARTS;
    const int view = tile / tiles_per_view;
    const int origin_x = tile % tiles_per_view % tiles_x * TILE + part % (TILE / SIDE) * SIDE;
    const int origin_y = tile % tiles_per_view / tiles_x * TILE + part / (TILE / SIDE) * SIDE;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int x = origin_x + warp % (SIDE / 8) * 8 + lane % 8;
    const int y = origin_y + warp / (SIDE / 8) * 4 + lane / 8;
    const bool inside = x < args.width && y < args.height;
    const int64_t pixel_index = (static_cast<int64_t>(view) * args.height + y) * args.width + x;

    Pixel pixel{x + 0.5f, y + 0.5f, make_float3(0.0f, 0.0f, 0.0f), 1.0f, inside};
    if (args.resume && inside) {
        const float4 s = args.state[pixel_index];
        pixel.colour = make_float3(s.x, s.y, s.z);
        pixel.live = s.w >= 0.0f;
        pixel.transmittance = fabsf(s.w);
    }

    __shared__ float4 shared_a[THREADS];
    __shared__ float4 shared_b[THREADS];
    __shared__ float shared_blue[THREADS];
    __shared__ uint8_t shared_warps[THREADS];  // bit w: the splat meets warp w's rectangle
    __shared__ int shared_count[WARPS];        // splats staged by each warp this batch

    // The warps of this block a pair value's splat meets: bits (2 qy + w) * 2 + qx of the tile's
    // mask for quarter (qx, qy) = (part % 2, part / 2).
    const bool masks = values_carry_masks(args.num_entries);
    const int quarter_bit = ENTRY_BITS + 4 * (part / 2) + part % 2;
    const int2 range = args.ranges[tile];
    int index = range.x + threadIdx.x;
    uint32_t next_warps = 0;
    float4 next_a, next_b;
    auto fetch = [&]() {
        next_warps = 0;
        if (index >= range.y) return;
        const uint32_t value = args.values[index];
        const uint32_t entry = masks ? value & ((1u << ENTRY_BITS) - 1) : value;
        if (masks) {
            next_warps = (value >> quarter_bit & 1u) | (value >> (quarter_bit + 2) & 1u) << 1;
            if (next_warps == 0) return;
        }
        next_a = args.splats[2 * static_cast<int64_t>(entry)];
        next_b = args.splats[2 * static_cast<int64_t>(entry) + 1];
        if (!masks) {
            float left[BANDS], right[BANDS];
            band_extents<BANDS>(next_a.x, next_a.y, Footprint(next_a, next_b), origin_y + 0.5f, left, right);
            next_warps = rectangles_met<BANDS, SIDE / WARP_COLUMNS>(left, right, origin_x + 0.5f);
        }
    };
    fetch();
    for (int batch_begin = range.x; batch_begin < range.y; batch_begin += THREADS) {
        // Also the barrier that lets the previous batch's shared data be overwritten.
        if (__syncthreads_count(!pixel.live) == THREADS) break;
        const unsigned staged = __ballot_sync(FULL_MASK, next_warps != 0);
        if (next_warps != 0) {
            const int slot = 32 * warp + __popc(staged & ((1u << lane) - 1));
            const Staged s = stage(next_a, next_b);
            shared_a[slot] = s.a;
            shared_b[slot] = s.b;
            shared_blue[slot] = s.blue;
            shared_warps[slot] = static_cast<uint8_t>(next_warps);
        }
        if (lane == 0) shared_count[warp] = __popc(staged);
        index += THREADS;
        fetch();
        __syncthreads();
        for (int first = 0; first < THREADS; first += 32) {
            if (__all_sync(FULL_MASK, !pixel.live)) break;
            const int j = first + lane;
            const bool meets = lane < shared_count[first / 32] && (shared_warps[j] >> warp & 1u);
            // ILP hits at a time: their opacities together, then the state updates in order.
            // Bit-reversed, so that the next splat in list order is the leading one (one count
            // of leading zeros a hit instead of a reversal and a search).
            for (unsigned hits = __brev(__ballot_sync(FULL_MASK, meets)); hits != 0;) {
                const int count = min(ILP, __popc(hits));
                float alpha[ILP], red[ILP], green[ILP], blue[ILP];
#pragma unroll
                for (int u = 0; u < ILP; ++u) {
                    if (u >= count) break;
                    const int lead = __clz(hits);
                    const int k = first + lead;
                    hits &= ~(0x80000000u >> lead);
                    const float4 a = shared_a[k], b = shared_b[k];
                    alpha[u] = alpha_at(pixel.x, pixel.y, a, b);
                    red[u] = b.z;
                    green[u] = b.w;
                    blue[u] = shared_blue[k];
                }
#pragma unroll
                for (int u = 0; u < ILP; ++u)
                    if (u < count) pixel.composite(alpha[u], red[u], green[u], blue[u]);
            }
        }
    }

    if (!inside) return;
    if (!args.final) {
        args.state[pixel_index] = make_float4(pixel.colour.x, pixel.colour.y, pixel.colour.z,
                                              pixel.live ? pixel.transmittance : -pixel.transmittance);
        return;
    }
    // As reference.to_uint8: round half up, clamp to [0, 255].
    const float t = pixel.transmittance;
    const float rgb[3] = {pixel.colour.x + t * args.background[0], pixel.colour.y + t * args.background[1],
                          pixel.colour.z + t * args.background[2]};
    uint8_t* out = *args.image_slot + 3 * pixel_index;
#pragma unroll
    for (int ch = 0; ch < 3; ++ch) out[ch] = static_cast<uint8_t>(fminf(fmaxf(rgb[ch] * 255.0f + 0.5f, 0.0f), 255.0f));
}

}  // namespace

cudaError_t launch_blend(const BlendArgs& args, cudaStream_t stream) {
    const unsigned tiles = static_cast<unsigned>(args.num_views) * tiles_along(args.width) * tiles_along(args.height);
    if (tiles == 0) return cudaSuccess;
    blend_kernel<<<tiles * PARTS, THREADS, 0, stream>>>(args);
    return cudaGetLastError();
}

}  // namespace splatcast
