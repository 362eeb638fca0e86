// Small 4x4 matrix helpers in the OpenGL/WebXR conventions the pose protocol uses:
// column-major arrays of 16 numbers (element (row r, column c) at index 4 * c + r), cameras with
// x right, y up, looking down -z.

export function subtract(a, b) {
  return [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
}

export function cross(a, b) {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

export function normalize(a) {
  const length = Math.hypot(a[0], a[1], a[2]);
  return [a[0] / length, a[1] / length, a[2] / length];
}

// Camera-to-world of a camera at `eye` looking at `target`, with world `up` roughly up on screen.
// (The inverse of the classic gluLookAt view matrix: columns are the camera's axes and position.)
export function cameraToWorldLookAt(eye, target, up = [0, 1, 0]) {
  const z = normalize(subtract(eye, target)); // the camera looks down its -z
  const x = normalize(cross(up, z));
  const y = cross(z, x);
  return [...x, 0, ...y, 0, ...z, 0, ...eye, 1];
}

// OpenGL perspective projection (like gluPerspective) for a vertical field of view in degrees.
export function perspective(verticalFovDeg, aspect, near, far) {
  const f = 1 / Math.tan((verticalFovDeg * Math.PI) / 360);
  return [
    f / aspect, 0, 0, 0,
    0, f, 0, 0,
    0, 0, (far + near) / (near - far), -1,
    0, 0, (2 * far * near) / (near - far), 0,
  ];
}

// The product a * b of two column-major 4x4 matrices (apply b, then a).
export function multiply(a, b) {
  const out = new Array(16);
  for (let c = 0; c < 4; c++) {
    for (let r = 0; r < 4; r++) {
      out[4 * c + r] = a[r] * b[4 * c] + a[4 + r] * b[4 * c + 1] + a[8 + r] * b[4 * c + 2] + a[12 + r] * b[4 * c + 3];
    }
  }
  return out;
}

// A rigid transform: a turn of `yawRad` about +y (positive turns -z towards -x), then a move to `position`.
export function yawThenTranslate(yawRad, position) {
  const c = Math.cos(yawRad);
  const s = Math.sin(yawRad);
  return [c, 0, -s, 0, 0, 1, 0, 0, s, 0, c, 0, ...position, 1];
}
