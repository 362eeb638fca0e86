// Reprojection ("timewarp"): where, in a frame rendered for an older view, to sample each pixel of
// a newer one, so that a late frame is drawn where the head now is instead of swimming with it.
//
// Views are {matrix, projection} as the pose protocol sends them: camera-to-world and OpenGL
// projection, column-major 4x4, camera x right, y up, looking down -z. The map from display to
// render normalized device coordinates (NDC) is the homography
//
//     H = K_r R_r^T (I + (C_d - C_r) n^T / (c - n.C_d)) R_d K_d^-1
//
// with K the projections' pinhole parts in NDC, R and C the cameras' rotations and centres, and
// n.X = c a world plane the content is taken to lie on. Without a plane (content at infinity) the
// middle factor drops: rotational timewarp, exact for any pure rotation about the eye. With the
// plane through the avatar it also undoes the eye's translation, exactly for points on that plane.
// H is the inverse of the forward warp K_d R_delta K_r^-1: a fragment shader pulls, it does not push.
//
// 3x3 matrices here are column-major arrays of 9 numbers (element (r, c) at 3c + r), as WebGL's
// uniformMatrix3fv takes them.

export function multiply3(a, b) {
  const out = new Array(9);
  for (let c = 0; c < 3; c++) {
    for (let r = 0; r < 3; r++) out[3 * c + r] = a[r] * b[3 * c] + a[3 + r] * b[3 * c + 1] + a[6 + r] * b[3 * c + 2];
  }
  return out;
}

export function transpose3(m) {
  return [m[0], m[3], m[6], m[1], m[4], m[7], m[2], m[5], m[8]];
}

export function invert3(m) {
  const [a, b, c, d, e, f, g, h, i] = m; // columns (a b c), (d e f), (g h i)
  const cofactors = [e * i - f * h, c * h - b * i, b * f - c * e, f * g - d * i, a * i - c * g, c * d - a * f, d * h - e * g, b * g - a * h, a * e - b * d];
  const det = a * cofactors[0] + d * cofactors[1] + g * cofactors[2];
  return cofactors.map((x) => x / det);
}

export function apply3(m, v) {
  return [0, 1, 2].map((r) => m[r] * v[0] + m[3 + r] * v[1] + m[6 + r] * v[2]);
}

// The projection's pinhole part: camera point (x, y, z) -> homogeneous NDC (x w, y w, w), w = -z.
// Rows x, y and w of the 4x4 projection, columns x, y and z (depth and translation play no part).
export function ndcIntrinsics(projection) {
  const p = projection;
  return [p[0], p[1], p[3], p[4], p[5], p[7], p[8], p[9], p[11]];
}

// Camera-to-world rotation (3x3) and centre of a column-major rigid 4x4.
export function rotationOf(matrix) {
  const m = matrix;
  return [m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]];
}

export function centreOf(matrix) {
  return [matrix[12], matrix[13], matrix[14]];
}

// Display NDC -> render NDC (homogeneous, w > 0 in front of the render camera) for a frame
// rendered from view `rendered` and shown in view `displayed`. `plane`, {point, normal} in world
// metres, is where the content lies (null: at infinity, rotation only).
export function displayToRender(rendered, displayed, plane = null) {
  const rRenderT = transpose3(rotationOf(rendered.matrix));
  const rDisplay = rotationOf(displayed.matrix);
  let worldToWorld = [1, 0, 0, 0, 1, 0, 0, 0, 1];
  if (plane !== null) {
    const n = plane.normal;
    const cd = centreOf(displayed.matrix);
    const cr = centreOf(rendered.matrix);
    const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    const distance = dot(n, plane.point) - dot(n, cd);
    const t = [0, 1, 2].map((i) => (cd[i] - cr[i]) / distance);
    // I + t n^T, column c is e_c + t n_c
    worldToWorld = [1 + t[0] * n[0], t[1] * n[0], t[2] * n[0], t[0] * n[1], 1 + t[1] * n[1], t[2] * n[1], t[0] * n[2], t[1] * n[2], 1 + t[2] * n[2]];
  }
  const cameraToCamera = multiply3(rRenderT, multiply3(worldToWorld, rDisplay));
  return multiply3(ndcIntrinsics(rendered.projection), multiply3(cameraToCamera, invert3(ndcIntrinsics(displayed.projection))));
}

// The plane through `point` (world metres) facing the displayed eye: a stand-in for the avatar's
// depth. Null when `point` is not at least `minDepth` metres in front of the eye, where a plane
// would fold the image over.
export function facingPlane(displayed, point, minDepth = 0.1) {
  const m = displayed.matrix;
  const forward = [-m[8], -m[9], -m[10]];
  const depth = forward[0] * (point[0] - m[12]) + forward[1] * (point[1] - m[13]) + forward[2] * (point[2] - m[14]);
  return depth >= minDepth ? { point, normal: forward } : null;
}
