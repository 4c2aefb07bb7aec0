// Numbers for people: sizes and speeds in decimal units (1 KB = 1000 bytes, as the
// server's maxFileSizeKB), remaining time, clock time.

const UNITS = ["B", "KB", "MB", "GB", "TB"];
const oneDecimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** 20000000 -> "20 MB", 1536 -> "1.5 KB". */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return "";
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? whole : oneDecimal;
  return `${digits.format(value)} ${UNITS[unit]}`;
}

/** 3100000 -> "3.1 MB/s"; "" when unknown. */
export function formatSpeed(bytesPerSecond) {
  return Number.isFinite(bytesPerSecond) && bytesPerSecond > 0 ? `${formatBytes(bytesPerSecond)}/s` : "";
}

/** Seconds left -> "12 s left", "3 min left", "1 h 5 min left"; "" when unknown. */
export function formatEta(seconds) {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 1) return "almost done";
  if (seconds < 60) return `${Math.ceil(seconds)} s left`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 60) return `${minutes} min left`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min left`;
}

/** A message's time, "14:05" in the customer's locale. */
export function formatTime(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}
