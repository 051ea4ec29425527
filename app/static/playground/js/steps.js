// Step frames over time: a paced player (so a fast model's refinement can still be watched), the
// trajectory palette and the confidence chart.

export const TRAJECTORY_COLOURS = ["#1f4fd1", "#d9480f", "#12805c", "#9c36b5", "#c2255c",
  "#0b7285", "#e67700", "#5c940d", "#495057", "#862e9c"];

export function trajectoryColour(t) {
  return TRAJECTORY_COLOURS[(Number(t) || 0) % TRAJECTORY_COLOURS.length];
}

/** Shows frame 0, 1, 2, ... as they are pushed, at least `pace` ms apart. */
export class StepPlayer {
  constructor(show) {
    this.show = show;
    this.start(0);
  }

  start(pace) {
    this.stop();
    this.pace = pace;
    this.available = 0;
    this.next = 0;
    this.last = -Infinity;
    this.ended = false;
    this.drained = new Promise((resolve) => { this.resolve = resolve; });
  }

  push() {
    this.available += 1;
    this.#schedule();
  }

  /** Resolves once every pushed frame has been shown. */
  finish() {
    this.ended = true;
    this.#schedule();
    return this.drained;
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.resolve?.();
  }

  #schedule() {
    if (this.timer) return;
    if (this.next >= this.available) {
      if (this.ended) this.resolve();
      return;
    }
    const wait = Math.max(0, this.last + this.pace - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.last = performance.now();
      this.show(this.next++);
      this.#schedule();
    }, wait);
  }
}

/** An inline SVG (parsed as HTML, so no namespace URL is needed): confidence per step, dots coloured by the
 * leading trajectory, the 0.5 halting threshold dashed, the current step ringed. */
export function confidenceChart(frames, current, width = 300) {
  if (!frames.length) return "";
  const W = Math.max(200, Math.round(width) || 300), H = 90, L = 26, R = 8, T = 8, B = 16;
  const n = frames.length;
  const x = (i) => L + (n === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (n - 1));
  const y = (c) => T + (1 - Math.max(0, Math.min(1, c))) * (H - T - B);
  const points = frames.map((f, i) => `${x(i).toFixed(1)},${y(f.confidence).toFixed(1)}`).join(" ");
  const dots = frames.map((f, i) => {
    const r = i === current ? 4.5 : 2.6;
    const ring = i === current ? ' stroke="#1d2433" stroke-width="1.5"' : "";
    return `<circle cx="${x(i).toFixed(1)}" cy="${y(f.confidence).toFixed(1)}" r="${r}" fill="${trajectoryColour(f.trajectory)}"${ring}/>`;
  }).join("");
  const first = frames[0].step, last = frames[n - 1].step;
  return `<svg viewBox="0 0 ${W} ${H}" role="img">
    <line x1="${L}" x2="${W - R}" y1="${y(0.5)}" y2="${y(0.5)}" stroke="#c4ccd9" stroke-dasharray="3 3"/>
    <line x1="${L}" x2="${W - R}" y1="${y(0)}" y2="${y(0)}" stroke="#e2e7ef"/>
    <text x="2" y="${y(1) + 4}" font-size="9" fill="#64708a">1.0</text>
    <text x="2" y="${y(0.5) + 3}" font-size="9" fill="#64708a">0.5</text>
    <text x="2" y="${y(0) + 3}" font-size="9" fill="#64708a">0</text>
    <text x="${L}" y="${H - 3}" font-size="9" fill="#64708a">step ${first}</text>
    <text x="${W - R}" y="${H - 3}" font-size="9" fill="#64708a" text-anchor="end">step ${last}</text>
    <polyline points="${points}" fill="none" stroke="#8aa6f0" stroke-width="1.6"/>
    ${dots}
  </svg>`;
}
