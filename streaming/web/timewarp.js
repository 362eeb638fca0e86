// Draws the newest video frame into each eye's viewport of a WebGL2 framebuffer (an XR layer's),
// each eye sampling its own slot of the side-by-side frame (left, right) through a
// display-to-render homography from reproject.js.
//
// Where the warped view looks past the frame's edge, the edge texels are repeated: the server's
// uniform background, so a turned head sees more background, not a black border.

const VERTEX_SHADER = `#version 300 es
in vec2 position;
out vec2 ndc;
void main() {
  ndc = position;
  gl_Position = vec4(position, 0.0, 1.0);
}`;

const FRAGMENT_SHADER = `#version 300 es
precision highp float;
uniform sampler2D frame;
uniform mat3 displayToRender; // display NDC -> render NDC, homogeneous
uniform vec2 slot;            // this eye's columns of the frame, in texture coordinates
uniform vec2 texel;           // one texel, in texture coordinates
in vec2 ndc;
out vec4 colour;
void main() {
  vec3 p = displayToRender * vec3(ndc, 1.0);
  if (p.z <= 0.0) { // behind the camera the frame was rendered from
    colour = vec4(0.0, 0.0, 0.0, 1.0);
    return;
  }
  vec2 q = 0.5 * p.xy / p.z + 0.5; // [0, 1] across this eye's image, y up
  vec2 uv = vec2(mix(slot.x, slot.y, q.x), 1.0 - q.y); // frames are uploaded top row first
  uv = clamp(uv, vec2(slot.x, 0.0) + 0.5 * texel, vec2(slot.y, 1.0) - 0.5 * texel); // never the other eye's texels
  colour = vec4(texture(frame, uv).rgb, 1.0);
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(`shader: ${gl.getShaderInfoLog(shader)}`);
  return shader;
}

export class TimewarpCompositor {
  constructor(gl) {
    this.gl = gl;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.bindAttribLocation(program, 0, "position");
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(`shader program: ${gl.getProgramInfoLog(program)}`);
    this.program = program;
    this.uniforms = Object.fromEntries(["frame", "displayToRender", "slot", "texel"].map((name) => [name, gl.getUniformLocation(program, name)]));

    // One triangle covering the viewport.
    this.vertexArray = gl.createVertexArray();
    gl.bindVertexArray(this.vertexArray);
    gl.bindBuffer(gl.ARRAY_BUFFER, gl.createBuffer());
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 3, -1, -1, 3]), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    gl.bindVertexArray(null);

    this.texture = gl.createTexture();
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    this.frameWidth = 0;
    this.frameHeight = 0;
  }

  // Copy the video's current frame into the texture; false when it has none yet.
  upload(video) {
    if (video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA || video.videoWidth === 0) return false;
    const gl = this.gl;
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.pixelStorei(gl.UNPACK_FLIP_Y_WEBGL, false);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, video);
    this.frameWidth = video.videoWidth;
    this.frameHeight = video.videoHeight;
    return true;
  }

  // Draw into `framebuffer` (null: the canvas). `eyes` lists {viewport: {x, y, width, height},
  // homography: 3x3 display-to-render or null (cleared)}; eye i of n samples slot i of n.
  draw(framebuffer, eyes) {
    const gl = this.gl;
    gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
    gl.disable(gl.SCISSOR_TEST);
    gl.disable(gl.DEPTH_TEST);
    gl.disable(gl.BLEND);
    gl.clearColor(0, 0, 0, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (this.frameWidth === 0) return;
    gl.useProgram(this.program);
    gl.bindVertexArray(this.vertexArray);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, this.texture);
    gl.uniform1i(this.uniforms.frame, 0);
    gl.uniform2f(this.uniforms.texel, 1 / this.frameWidth, 1 / this.frameHeight);
    eyes.forEach(({ viewport, homography }, i) => {
      if (homography === null) return;
      gl.viewport(viewport.x, viewport.y, viewport.width, viewport.height);
      gl.uniformMatrix3fv(this.uniforms.displayToRender, false, homography);
      gl.uniform2f(this.uniforms.slot, i / eyes.length, (i + 1) / eyes.length);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
    });
    gl.bindVertexArray(null);
  }
}
