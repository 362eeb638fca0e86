// The reprojection maths of streaming/web/reproject.js against direct projections of world
// points, on random views with headset-like asymmetric frusta. Run: node --test tests/js/
import assert from "node:assert/strict";
import test from "node:test";

import { multiply } from "../../streaming/web/mat4.js";
import { apply3, displayToRender, facingPlane, invert3, multiply3, ndcIntrinsics } from "../../streaming/web/reproject.js";

const EXACT = 1e-9; // NDC units; a 4K-wide eye is 2000 pixels per NDC unit

// Deterministic uniform numbers in [0, 1) (mulberry32), so a failure replays.
function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const uniform = (random, low, high) => low + (high - low) * random();

// OpenGL frustum (glFrustum) from tangents of the half-angles left, right, down, up.
function frustum(left, right, down, up, near = 0.05, far = 100) {
  const [l, r, b, t] = [-left * near, right * near, -down * near, up * near];
  return [
    (2 * near) / (r - l), 0, 0, 0,
    0, (2 * near) / (t - b), 0, 0,
    (r + l) / (r - l), (t + b) / (t - b), (far + near) / (near - far), -1,
    0, 0, (2 * far * near) / (near - far), 0,
  ];
}

// A headset eye: wider on its outer side, a little taller downwards.
function eyeProjection(random) {
  return frustum(uniform(random, 0.8, 1.3), uniform(random, 0.8, 1.3), uniform(random, 0.9, 1.4), uniform(random, 0.7, 1.1));
}

// Camera-to-world from a unit quaternion (x, y, z, w) and a position.
function rigid([x, y, z, w], position) {
  return [
    1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w), 0,
    2 * (x * y - z * w), 1 - 2 * (x * x + z * z), 2 * (y * z + x * w), 0,
    2 * (x * z + y * w), 2 * (y * z - x * w), 1 - 2 * (x * x + y * y), 0,
    ...position, 1,
  ];
}

function quaternion(axis, angle) {
  const n = Math.hypot(...axis);
  const s = Math.sin(angle / 2) / n;
  return [axis[0] * s, axis[1] * s, axis[2] * s, Math.cos(angle / 2)];
}

function randomQuaternion(random, maxAngle = Math.PI) {
  const axis = [uniform(random, -1, 1), uniform(random, -1, 1), uniform(random, -1, 1)];
  return quaternion(axis, uniform(random, -maxAngle, maxAngle));
}

// World point -> NDC [x, y] through the full 4x4 pipeline (projection * world-to-camera), and w.
function project(view, point) {
  const m = view.matrix; // rigid camera-to-world: world-to-camera is R^T (X - C)
  const d = [point[0] - m[12], point[1] - m[13], point[2] - m[14]];
  const camera = [0, 1, 2].map((c) => m[4 * c] * d[0] + m[4 * c + 1] * d[1] + m[4 * c + 2] * d[2]);
  const p = view.projection;
  const clip = [0, 1, 3].map((r) => p[r] * camera[0] + p[4 + r] * camera[1] + p[8 + r] * camera[2] + p[12 + r]);
  return { ndc: [clip[0] / clip[2], clip[1] / clip[2]], w: clip[2] };
}

// A world point that `view` sees at `ndc`, `depth` metres along its view axis.
function unproject(view, ndc, depth) {
  const camera = apply3(invert3(ndcIntrinsics(view.projection)), [ndc[0], ndc[1], 1]).map((x) => x * depth);
  const m = view.matrix;
  return [0, 1, 2].map((r) => m[r] * camera[0] + m[4 + r] * camera[1] + m[8 + r] * camera[2] + m[12 + r]);
}

function warp(h, ndc) {
  const p = apply3(h, [ndc[0], ndc[1], 1]);
  assert.ok(p[2] > 0, "in front of the render camera");
  return [p[0] / p[2], p[1] / p[2]];
}

function assertClose(got, expected, tolerance, message) {
  const error = Math.hypot(got[0] - expected[0], got[1] - expected[1]);
  assert.ok(error <= tolerance, `${message}: ${got} vs ${expected} (error ${error})`);
}

test("3x3 inverse and product", () => {
  const random = generator(1);
  for (let i = 0; i < 100; i++) {
    const m = Array.from({ length: 9 }, (_, k) => uniform(random, -1, 1) + (k % 4 === 0 ? 3 : 0)); // well conditioned
    for (const product of [multiply3(m, invert3(m)), multiply3(invert3(m), m)]) {
      product.forEach((x, k) => assert.ok(Math.abs(x - (k % 4 === 0 ? 1 : 0)) < 1e-12, `element ${k}: ${x}`));
    }
  }
});

test("the NDC pinhole part of an asymmetric projection projects like the full matrix", () => {
  const random = generator(2);
  for (let i = 0; i < 200; i++) {
    const view = { matrix: rigid(randomQuaternion(random), [uniform(random, -3, 3), uniform(random, 0, 2), uniform(random, -3, 3)]), projection: eyeProjection(random) };
    const ndc = [uniform(random, -1, 1), uniform(random, -1, 1)];
    const point = unproject(view, ndc, uniform(random, 0.2, 30));
    const { ndc: again, w } = project(view, point);
    assert.ok(w > 0);
    assertClose(again, ndc, EXACT, "unproject then project");
  }
});

test("a frame rendered at pose A and shown at pose B lands where a render at B puts it, for pure rotations", () => {
  const random = generator(3);
  for (let i = 0; i < 200; i++) {
    const head = [uniform(random, -2, 2), uniform(random, 1, 2), uniform(random, -2, 2)];
    const turn = randomQuaternion(random, (25 * Math.PI) / 180); // the head turned this much between render and display
    const rendered = { matrix: rigid(randomQuaternion(random), head), projection: eyeProjection(random) };
    const displayed = { matrix: multiply(rendered.matrix, rigid(turn, [0, 0, 0])), projection: eyeProjection(random) };
    const plane = { point: unproject(displayed, [0, 0], 2), normal: [0, 0, 1] }; // ignored: no translation to undo
    for (const h of [displayToRender(rendered, displayed), displayToRender(rendered, displayed, plane)]) {
      for (let k = 0; k < 20; k++) {
        const point = unproject(displayed, [uniform(random, -1, 1), uniform(random, -1, 1)], uniform(random, 0.3, 50));
        const atA = project(rendered, point);
        if (atA.w <= 0) continue; // behind the render camera: that frame never had it
        assertClose(warp(h, project(displayed, point).ndc), atA.ndc, EXACT, "warped display pixel");
      }
    }
  }
});

test("an unchanged view maps every pixel to itself", () => {
  const random = generator(4);
  const view = { matrix: rigid(randomQuaternion(random), [0.3, 1.6, 2]), projection: eyeProjection(random) };
  const h = displayToRender(view, view);
  for (let k = 0; k < 20; k++) {
    const ndc = [uniform(random, -1, 1), uniform(random, -1, 1)];
    assertClose(warp(h, ndc), ndc, EXACT, "identity");
  }
});

test("the plane term undoes head translation for content on the plane; rotation alone does not", () => {
  const random = generator(5);
  for (let i = 0; i < 100; i++) {
    const rendered = { matrix: rigid(randomQuaternion(random), [0, 1.6, 0]), projection: eyeProjection(random) };
    const step = rigid(randomQuaternion(random, (15 * Math.PI) / 180), [uniform(random, -0.1, 0.1), uniform(random, -0.05, 0.05), uniform(random, -0.1, 0.1)]);
    const displayed = { matrix: multiply(rendered.matrix, step), projection: eyeProjection(random) };
    const avatar = unproject(displayed, [uniform(random, -0.3, 0.3), uniform(random, -0.3, 0.3)], uniform(random, 0.8, 3));
    const plane = facingPlane(displayed, avatar);
    assert.ok(plane !== null);
    const withPlane = displayToRender(rendered, displayed, plane);
    const rotationOnly = displayToRender(rendered, displayed);
    let rotationError = 0;
    for (let k = 0; k < 20; k++) {
      // a point on the plane: the avatar's point moved within the plane
      const ndc = [uniform(random, -0.8, 0.8), uniform(random, -0.8, 0.8)];
      const m = displayed.matrix;
      const ray = apply3(multiply3([m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]], invert3(ndcIntrinsics(displayed.projection))), [ndc[0], ndc[1], 1]);
      const eye = [m[12], m[13], m[14]];
      const s = plane.normal.reduce((sum, n, j) => sum + n * (avatar[j] - eye[j]), 0) / plane.normal.reduce((sum, n, j) => sum + n * ray[j], 0);
      const point = eye.map((x, j) => x + s * ray[j]);
      const atA = project(rendered, point);
      if (atA.w <= 0) continue;
      assertClose(warp(withPlane, ndc), atA.ndc, 1e-8, "point on the plane");
      const [x, y] = warp(rotationOnly, ndc);
      rotationError = Math.max(rotationError, Math.hypot(x - atA.ndc[0], y - atA.ndc[1]));
    }
    assert.ok(rotationError > 1e-3, `rotation alone should leave a translation error (${rotationError})`);
  }
});

test("no plane for an avatar behind or at the eye", () => {
  const view = { matrix: rigid([0, 0, 0, 1], [0, 1.6, 0]), projection: frustum(1, 1, 1, 1) };
  assert.notEqual(facingPlane(view, [0, 1.6, -2]), null);
  assert.equal(facingPlane(view, [0, 1.6, 2]), null);
  assert.equal(facingPlane(view, [0.5, 1.6, -0.01]), null);
});
