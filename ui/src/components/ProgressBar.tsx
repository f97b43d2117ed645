interface Props {
  percent: number;
  label: string;
}

export function ProgressBar({ percent, label }: Props) {
  const value = Math.round(Math.min(100, Math.max(0, percent)));
  return (
    <div
      className="progress"
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={value}
      aria-valuetext={`${value} %`}
    >
      <div className="progress__fill" style={{ inlineSize: `${value}%` }} />
    </div>
  );
}
