// An orbit camera around the avatar and the mouse / touch controls that steer it.
//
// The camera sits on a sphere around `target` (world metres, y up): azimuth 0 on +z looking
// towards -z, positive azimuth towards +x, positive elevation above the target. This is the
// server's `orbit_camera`, so the first pose shows what the server streams before any pose.
// The field of view spans the viewport's narrower side (vertical on a landscape screen,
// horizontal on a portrait phone), so the avatar framed by the server's radius fits either way.

import { cameraToWorldLookAt, perspective } from "./mat4.js";

const DEG = Math.PI / 180;
const ROTATE_DEG_PER_PX = 0.4;
const WHEEL_ZOOM_PER_PX = 0.0015;
const MAX_ELEVATION_DEG = 89; // the look-at frame flips at the poles
export const IPD_M = 0.063; // a typical interpupillary distance, metres

export class OrbitCamera {
  constructor({ target, radius, azimuthDeg = 0, elevationDeg = 0, fovDeg = 40 }) {
    this.home = { target: [...target], radius, azimuthDeg, elevationDeg };
    this.fovDeg = fovDeg;
    this.minRadius = radius * 0.05;
    this.maxRadius = radius * 20;
    this.reset();
  }

  reset() {
    this.target = [...this.home.target];
    this.radius = this.home.radius;
    this.azimuthDeg = this.home.azimuthDeg;
    this.elevationDeg = this.home.elevationDeg;
  }

  get eye() {
    const az = this.azimuthDeg * DEG;
    const el = this.elevationDeg * DEG;
    const r = this.radius;
    return [
      this.target[0] + r * Math.sin(az) * Math.cos(el),
      this.target[1] + r * Math.sin(el),
      this.target[2] + r * Math.cos(az) * Math.cos(el),
    ];
  }

  // Column-major OpenGL camera-to-world, as the pose protocol's `matrix`.
  cameraToWorld() {
    return cameraToWorldLookAt(this.eye, this.target);
  }

  verticalFovDeg(aspect) {
    if (aspect >= 1) return this.fovDeg;
    return (2 * Math.atan(Math.tan((this.fovDeg * DEG) / 2) / aspect)) / DEG;
  }

  // Column-major OpenGL projection for a viewport of this aspect (width / height).
  projection(aspect) {
    return perspective(this.verticalFovDeg(aspect), aspect, Math.max(0.01, this.radius * 0.01), this.radius * 100);
  }

  // A stereo pair {matrix, projection} (left, right): the camera moved half the interpupillary
  // distance `ipd` (metres) along its x axis each way, both with this aspect's projection.
  eyeViews(aspect, ipd = IPD_M) {
    const matrix = this.cameraToWorld();
    const projection = this.projection(aspect);
    return [-ipd / 2, ipd / 2].map((offset) => ({
      matrix: matrix.map((x, i) => (i >= 12 && i < 15 ? x + offset * matrix[i - 12] : x)),
      projection,
    }));
  }

  // Turn the camera around the target; a drag to the right turns the avatar to the right.
  rotate(dxPx, dyPx) {
    this.azimuthDeg = (this.azimuthDeg - dxPx * ROTATE_DEG_PER_PX) % 360;
    const el = this.elevationDeg + dyPx * ROTATE_DEG_PER_PX;
    this.elevationDeg = Math.min(MAX_ELEVATION_DEG, Math.max(-MAX_ELEVATION_DEG, el));
  }

  // Move the target in the view plane so the point under the cursor follows it.
  pan(dxPx, dyPx, viewportWidthPx, viewportHeightPx) {
    const fov = this.verticalFovDeg(viewportWidthPx / viewportHeightPx) * DEG;
    const metresPerPx = (2 * this.radius * Math.tan(fov / 2)) / viewportHeightPx;
    const m = this.cameraToWorld();
    for (let i = 0; i < 3; i++) {
      this.target[i] += (-dxPx * m[i] + dyPx * m[4 + i]) * metresPerPx;
    }
  }

  // Multiply the distance to the target by `factor` (< 1 comes closer).
  zoom(factor) {
    this.radius = Math.min(this.maxRadius, Math.max(this.minRadius, this.radius * factor));
  }
}

// Steer `camera` from pointer events on `element`: one pointer rotates (pans with the right or
// middle button or with shift held), the wheel zooms, two touches pinch-zoom and pan, a double
// click goes back to the start. `onChange` runs after every change.
export function attachOrbitControls(element, camera, onChange) {
  const pointers = new Map(); // pointerId -> {x, y}
  let panning = false;
  let pinch = null; // two pointers: the camera and the fingers' centroid and spread when they landed

  const fingers = () => {
    const [a, b] = pointers.values();
    return { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2, spread: Math.hypot(a.x - b.x, a.y - b.y) };
  };
  // Two-finger gestures are measured from where they began, so a symmetric pinch leaves the
  // target exactly where it was however the fingers' moves interleave.
  const beginPinch = () => {
    pinch = pointers.size === 2 ? { target: [...camera.target], radius: camera.radius, ...fingers() } : null;
  };

  const down = (event) => {
    element.setPointerCapture(event.pointerId);
    pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
    panning = event.button === 1 || event.button === 2 || event.shiftKey;
    beginPinch();
  };

  const move = (event) => {
    const pointer = pointers.get(event.pointerId);
    if (!pointer) return;
    const dx = event.clientX - pointer.x;
    const dy = event.clientY - pointer.y;
    pointer.x = event.clientX;
    pointer.y = event.clientY;
    if (pointers.size === 1) {
      if (panning || event.shiftKey) camera.pan(dx, dy, element.clientWidth, element.clientHeight);
      else camera.rotate(dx, dy);
    } else if (pinch !== null) {
      const now = fingers();
      camera.target = [...pinch.target];
      camera.radius = pinch.radius;
      if (now.spread > 0 && pinch.spread > 0) camera.zoom(pinch.spread / now.spread);
      camera.pan(now.x - pinch.x, now.y - pinch.y, element.clientWidth, element.clientHeight);
    } else {
      return;
    }
    onChange();
  };

  const up = (event) => {
    pointers.delete(event.pointerId);
    beginPinch();
  };

  const wheel = (event) => {
    event.preventDefault();
    const px = event.deltaMode === WheelEvent.DOM_DELTA_LINE ? event.deltaY * 16 : event.deltaY;
    camera.zoom(Math.exp(px * WHEEL_ZOOM_PER_PX));
    onChange();
  };

  const doubleClick = () => {
    camera.reset();
    onChange();
  };

  const listeners = [
    ["pointerdown", down],
    ["pointermove", move],
    ["pointerup", up],
    ["pointercancel", up],
    ["wheel", wheel, { passive: false }],
    ["dblclick", doubleClick],
    ["contextmenu", (event) => event.preventDefault()],
  ];
  for (const [type, listener, options] of listeners) element.addEventListener(type, listener, options);
}
