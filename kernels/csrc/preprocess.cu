// Stage 1: per (view, Gaussian) projection, the 3DGS "preprocess".
//
// One thread per Gaussian loops over every view of the batch: the 3D covariance and the SH
// coefficients are loaded and built once and reused for all views (a stereo pair or many
// sessions' views), which is where batching views pays off in this stage.
#include "common.h"
#include "rasterizer.h"

namespace splatcast {

namespace {

constexpr float SH_C0 = 0.28209479177387814f;
constexpr float SH_C1 = 0.4886025119029199f;
constexpr float SH_C2_0 = 1.0925484305920792f, SH_C2_1 = -1.0925484305920792f, SH_C2_2 = 0.31539156525252005f,
                SH_C2_3 = -1.0925484305920792f, SH_C2_4 = 0.5462742152960396f;
constexpr float SH_C3_0 = -0.5900435899266435f, SH_C3_1 = 2.890611442640554f, SH_C3_2 = -0.4570457994644658f,
                SH_C3_3 = 0.3731763325901154f, SH_C3_4 = -0.4570457994644658f, SH_C3_5 = 1.445305721320277f,
                SH_C3_6 = -0.5900435899266435f;

// The entry's depth-sort key (see ViewParams): exact, since positive floats order as their bits.
__device__ inline uint32_t depth_key(float depth, const ViewParams& view) {
    const uint32_t bits = __float_as_uint(depth);
    return bits < view.depth_floor ? 0u : min(bits - view.depth_floor, view.depth_key_max);
}

__device__ inline float load_value(const float* p) { return *p; }
__device__ inline float load_value(const __half* p) { return __half2float(*p); }

// Real SH basis of kernels/sh.py at unit direction (x, y, z), in the 3DGS band order.
template <int DEGREE>
__device__ inline void sh_basis(float x, float y, float z, float (&basis)[(DEGREE + 1) * (DEGREE + 1)]) {
    basis[0] = SH_C0;
    if constexpr (DEGREE >= 1) {
        basis[1] = -SH_C1 * y;
        basis[2] = SH_C1 * z;
        basis[3] = -SH_C1 * x;
    }
    if constexpr (DEGREE >= 2) {
        float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
        basis[4] = SH_C2_0 * xy;
        basis[5] = SH_C2_1 * yz;
        basis[6] = SH_C2_2 * (2.0f * zz - xx - yy);
        basis[7] = SH_C2_3 * xz;
        basis[8] = SH_C2_4 * (xx - yy);
        if constexpr (DEGREE >= 3) {
            basis[9] = SH_C3_0 * y * (3.0f * xx - yy);
            basis[10] = SH_C3_1 * xy * z;
            basis[11] = SH_C3_2 * y * (4.0f * zz - xx - yy);
            basis[12] = SH_C3_3 * z * (2.0f * zz - 3.0f * xx - 3.0f * yy);
            basis[13] = SH_C3_4 * x * (4.0f * zz - xx - yy);
            basis[14] = SH_C3_5 * z * (xx - yy);
            basis[15] = SH_C3_6 * x * (xx - 3.0f * yy);
        }
    }
}

template <typename Storage, int DEGREE>
__global__ void __launch_bounds__(128) preprocess_kernel(
    int num_gaussians, int num_views, int width, int height, int sh_stride,
    const float4* __restrict__ means_opacity,  // (N) x, y, z metres; opacity
    const Storage* __restrict__ shape,         // (N, 8) quaternion wxyz, scale xyz (std-dev, metres), pad
    const Storage* __restrict__ sh,            // (N, sh_stride) coefficients (K, 3) row-major
    const ViewParams* __restrict__ views, float4* __restrict__ splats,
    uint32_t* __restrict__ depth_keys, uint32_t* __restrict__ entry_ids, uint32_t* __restrict__ tile_counts) {
    constexpr int K = (DEGREE + 1) * (DEGREE + 1);
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= num_gaussians) return;

    const float4 mo = means_opacity[g];
    const float opacity = mo.w;

    // World covariance M M^T with M = R(q) diag(s); the quaternion is renormalised so that FP16
    // storage rounding does not leak into the scale.
    const Storage* s = shape + 8 * static_cast<int64_t>(g);
    float qw = load_value(s + 0), qx = load_value(s + 1), qy = load_value(s + 2), qz = load_value(s + 3);
    float inv_norm = rsqrtf(qw * qw + qx * qx + qy * qy + qz * qz);
    qw *= inv_norm, qx *= inv_norm, qy *= inv_norm, qz *= inv_norm;
    const float sx = load_value(s + 4), sy = load_value(s + 5), sz = load_value(s + 6);
    float m[3][3] = {
        {(1.f - 2.f * (qy * qy + qz * qz)) * sx, 2.f * (qx * qy - qw * qz) * sy, 2.f * (qx * qz + qw * qy) * sz},
        {2.f * (qx * qy + qw * qz) * sx, (1.f - 2.f * (qx * qx + qz * qz)) * sy, 2.f * (qy * qz - qw * qx) * sz},
        {2.f * (qx * qz - qw * qy) * sx, 2.f * (qy * qz + qw * qx) * sy, (1.f - 2.f * (qx * qx + qy * qy)) * sz},
    };
    float cov[3][3];
#pragma unroll
    for (int i = 0; i < 3; ++i)
#pragma unroll
        for (int j = 0; j < 3; ++j) cov[i][j] = m[i][0] * m[j][0] + m[i][1] * m[j][1] + m[i][2] * m[j][2];

    float coeffs[K * 3];
    const Storage* sh_row = sh + static_cast<int64_t>(sh_stride) * g;
#pragma unroll
    for (int i = 0; i < K * 3; ++i) coeffs[i] = load_value(sh_row + i);

    const int tiles_x = tiles_along(width), tiles_y = tiles_along(height);
    const float q_max = 2.0f * logf(fmaxf(opacity / ALPHA_MIN, 1.0f));

    for (int v = 0; v < num_views; ++v) {
        const ViewParams& view = views[v];
        const int64_t entry = static_cast<int64_t>(v) * num_gaussians + g;
        entry_ids[entry] = static_cast<uint32_t>(entry);
        depth_keys[entry] = INVALID_KEY;
        tile_counts[entry] = 0;

        const float* w = view.world_to_camera;
        const float r[9] = {w[0], w[1], w[2], w[4], w[5], w[6], w[8], w[9], w[10]};
        const float fx = view.intrinsics[0], cx = view.intrinsics[2], fy = view.intrinsics[4], cy = view.intrinsics[5];
        const float px = r[0] * mo.x + r[1] * mo.y + r[2] * mo.z + w[3];
        const float py = r[3] * mo.x + r[4] * mo.y + r[5] * mo.z + w[7];
        const float pz = r[6] * mo.x + r[7] * mo.y + r[8] * mo.z + w[11];
        if (!(pz > NEAR_PLANE) || !(opacity >= ALPHA_MIN)) continue;

        // EWA: linearise the projection at the centre, clamped to just outside the frustum.
        const float guard_x = FRUSTUM_GUARD * 0.5f * width / fx;
        const float guard_y = FRUSTUM_GUARD * 0.5f * height / fy;
        const float lim_x = fminf(fmaxf(px / pz, -(cx / fx + guard_x)), (width - cx) / fx + guard_x);
        const float lim_y = fminf(fmaxf(py / pz, -(cy / fy + guard_y)), (height - cy) / fy + guard_y);
        const float inv_z = 1.0f / pz;
        // T = J R (2x3): the Jacobian J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]] with
        // tx/z = lim_x, so -fx tx/z^2 = -fx lim_x / z.
        float t0[3], t1[3];
#pragma unroll
        for (int j = 0; j < 3; ++j) {
            t0[j] = fx * inv_z * (r[j] - lim_x * r[6 + j]);
            t1[j] = fy * inv_z * (r[3 + j] - lim_y * r[6 + j]);
        }
        float u0[3], u1[3];
#pragma unroll
        for (int i = 0; i < 3; ++i) {
            u0[i] = cov[i][0] * t0[0] + cov[i][1] * t0[1] + cov[i][2] * t0[2];
            u1[i] = cov[i][0] * t1[0] + cov[i][1] * t1[1] + cov[i][2] * t1[2];
        }
        const float a = t0[0] * u0[0] + t0[1] * u0[1] + t0[2] * u0[2] + LOW_PASS;
        const float b = t1[0] * u0[0] + t1[1] * u0[1] + t1[2] * u0[2];
        const float c = t1[0] * u1[0] + t1[1] * u1[1] + t1[2] * u1[2] + LOW_PASS;
        const float det = a * c - b * b;
        if (!(det > 0.0f)) continue;

        const float mx = fx * px * inv_z + cx;
        const float my = fy * py * inv_z + cy;
        const float extent_x = sqrtf(q_max * a), extent_y = sqrtf(q_max * c);  // as the reference culls
        if (!(mx + extent_x > 0.0f && mx - extent_x < width && my + extent_y > 0.0f && my - extent_y < height)) continue;

        // The record, then the tiles its footprint (derived from the record, as emission will) meets.
        const float inv_det = 1.0f / det;
        const float4 record_a = make_float4(mx, my, c * inv_det, -b * inv_det);
        float4 record_b = make_float4(a * inv_det, opacity, 0.0f, 0.0f);
        const Footprint f(record_a, record_b);
        int row_begin, row_end;
        footprint_rows(my, f, tiles_y, row_begin, row_end);
        uint32_t count = 0;
        for (int ty = row_begin; ty < row_end; ++ty) {
            int col_begin, col_end;
            footprint_cols(mx, my, f, ty, tiles_x, col_begin, col_end);
            count += col_end - col_begin;
        }
        if (count == 0) continue;

        // Colour seen from this camera: max(0.5 + sum_k Y_k(d) sh_k, 0), d = unit(mean - centre),
        // and mean - centre = R^T p for the mean p in camera coordinates (R is a rotation).
        float dx = r[0] * px + r[3] * py + r[6] * pz, dy = r[1] * px + r[4] * py + r[7] * pz, dz = r[2] * px + r[5] * py + r[8] * pz;
        const float inv_len = rsqrtf(fmaxf(dx * dx + dy * dy + dz * dz, 1e-30f));
        dx *= inv_len, dy *= inv_len, dz *= inv_len;
        float basis[K];
        sh_basis<DEGREE>(dx, dy, dz, basis);
        float rgb[3] = {0.5f, 0.5f, 0.5f};
#pragma unroll
        for (int k = 0; k < K; ++k)
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) rgb[ch] += basis[k] * coeffs[3 * k + ch];

        const __half2 rg = __floats2half2_rn(fmaxf(rgb[0], 0.0f), fmaxf(rgb[1], 0.0f));
        const __half2 b0 = __floats2half2_rn(fmaxf(rgb[2], 0.0f), 0.0f);
        record_b.z = *reinterpret_cast<const float*>(&rg);
        record_b.w = *reinterpret_cast<const float*>(&b0);
        splats[2 * entry] = record_a;
        splats[2 * entry + 1] = record_b;
        depth_keys[entry] = depth_key(pz, view);
        tile_counts[entry] = count;
    }
}

template <typename Storage>
cudaError_t launch_preprocess_typed(const PreprocessArgs& args, cudaStream_t stream) {
    const int threads = 128;
    const int blocks = (args.num_gaussians + threads - 1) / threads;
    const auto* shape = static_cast<const Storage*>(args.shape);
    const auto* sh = static_cast<const Storage*>(args.sh);
#define SPLATCAST_PREPROCESS(DEGREE)                                                                              \
    preprocess_kernel<Storage, DEGREE><<<blocks, threads, 0, stream>>>(                                           \
        args.num_gaussians, args.num_views, args.width, args.height, args.sh_stride, args.means_opacity, shape, sh, \
        args.views, args.splats, args.depth_keys, args.entry_ids, args.tile_counts)
    switch (args.sh_degree) {
        case 0: SPLATCAST_PREPROCESS(0); break;
        case 1: SPLATCAST_PREPROCESS(1); break;
        case 2: SPLATCAST_PREPROCESS(2); break;
        case 3: SPLATCAST_PREPROCESS(3); break;
        default: return cudaErrorInvalidValue;
    }
#undef SPLATCAST_PREPROCESS
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch_preprocess(const PreprocessArgs& args, cudaStream_t stream) {
    if (args.num_gaussians == 0 || args.num_views == 0) return cudaSuccess;
    return args.half_storage ? launch_preprocess_typed<__half>(args, stream) : launch_preprocess_typed<float>(args, stream);
}

}  // namespace splatcast
