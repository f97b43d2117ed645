import { LevelMeter } from "../LevelMeter";
import { useStatus, type StatusStore } from "./statusStore";

/** A stem's level meter: the only part of its lane that follows the status stream. */
export function StemMeter({ store, index, label }: { store: StatusStore; index: number; label: string }) {
  const level = useStatus(store, (s) => s?.levels[index]);
  return <LevelMeter level={level} label={label} />;
}

/** The master bus's level meter. */
export function MasterMeter({ store }: { store: StatusStore }) {
  const level = useStatus(store, (s) => s?.master);
  return <LevelMeter level={level} label="Master" />;
}
