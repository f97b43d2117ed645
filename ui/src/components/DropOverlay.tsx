/** Covers the window while files are dragged over it. */
export function DropOverlay() {
  return (
    <div className="drop-overlay">
      <p className="drop-overlay__text">Drop songs to separate them</p>
    </div>
  );
}
