// Display formatting only: money arrives as integer minor units (halalas) computed by the core.

export type Lang = 'en' | 'ar';

/** The digits Arabic screens show (the shop's setting): one style on every screen. */
let arabicDigits = true;
export function setArabicDigits(style: string | null | undefined): void {
  arabicDigits = style !== 'latin';
}

export function intlLocale(lang: Lang): string {
  if (lang !== 'ar') return 'en-SA';
  return arabicDigits ? 'ar-SA' : 'ar-SA-u-nu-latn';
}

/** `text`'s Latin digits in the screen's digit style (Arabic-Indic on an Arabic screen). */
export function localDigits(text: string, lang: Lang): string {
  if (lang !== 'ar' || !arabicDigits) return text;
  return text.replace(/[0-9]/g, (d) => String.fromCharCode(0x0660 + Number(d)));
}

const moneyFmts = new Map<string, Intl.NumberFormat>();

/**
 * The shop's currency and its minor-unit digits, from the synced shop settings (sync.ts sets
 * them when the settings row arrives or changes). Until then: SAR with 2 digits.
 */
const unit = { currency: 'SAR', digits: 2 };
export function setMoneyUnit(currency: string, digits: number): void {
  if (/^[A-Z]{3}$/.test(currency)) unit.currency = currency;
  if (Number.isInteger(digits) && digits >= 0 && digits <= 3) unit.digits = digits;
}
export function moneyUnit(): { currency: string; digits: number } {
  return { ...unit };
}
const numFmts = new Map<string, Intl.NumberFormat>();

/** 1850 -> "SAR 18.50" (en-SA) or "١٨٫٥٠ ر.س.‏" (ar-SA). Null/undefined shows a dash. */
export function formatMoney(
  minor: number | null | undefined,
  lang: Lang,
  currency = unit.currency,
  digits = unit.digits,
): string {
  if (minor === null || minor === undefined || !Number.isFinite(minor)) return '—';
  const key = `${intlLocale(lang)}:${currency}:${digits}`;
  let f = moneyFmts.get(key);
  if (!f) {
    f = new Intl.NumberFormat(intlLocale(lang), {
      style: 'currency',
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
    });
    moneyFmts.set(key, f);
  }
  return f.format(minorToDecimalString(minor, digits) as unknown as number);
}

/** Exact decimal text of a minor-unit integer: -1805 -> "-18.05" (2 digits), 1805 -> "1.805" (3). */
export function minorToDecimalString(minor: number, digits = unit.digits): string {
  const n = Math.trunc(minor);
  const sign = n < 0 ? '-' : '';
  const abs = Math.abs(n);
  if (digits === 0) return `${sign}${abs}`;
  const scale = 10 ** digits;
  const major = Math.floor(abs / scale);
  const frac = abs % scale;
  return `${sign}${major}.${frac.toString().padStart(digits, '0')}`;
}

/** Plain number in the locale's digits. */
export function formatNumber(n: number | null | undefined, lang: Lang): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const locale = intlLocale(lang);
  let f = numFmts.get(locale);
  if (!f) numFmts.set(locale, (f = new Intl.NumberFormat(locale, { maximumFractionDigits: 2 })));
  return f.format(n);
}

const ARABIC_DIGITS: Record<string, string> = {
  '٠': '0', '١': '1', '٢': '2', '٣': '3', '٤': '4', '٥': '5', '٦': '6', '٧': '7', '٨': '8', '٩': '9',
  '۰': '0', '۱': '1', '۲': '2', '۳': '3', '۴': '4', '۵': '5', '۶': '6', '۷': '7', '۸': '8', '۹': '9',
  '٫': '.', '٬': ',',
};

/**
 * What the user typed ("18.5", "١٨٫٥٠", "1,200") as integer minor units, or null if it is not
 * an amount. Never goes through floating point.
 */
export function parseMoney(text: string, digits = unit.digits): number | null {
  const s = text
    .trim()
    .replace(/[٠-٩۰-۹٫٬]/g, (c) => ARABIC_DIGITS[c] ?? c)
    .replace(/,/g, '')
    .replace(/\s/g, '');
  const m = /^(\d*)(?:\.(\d*))?$/.exec(s);
  if (!m || (m[1] === '' && (m[2] ?? '') === '') || (m[2] ?? '').length > digits) return null;
  const major = Number(m[1] || '0');
  const frac = (m[2] ?? '').padEnd(digits, '0');
  const minor = major * 10 ** digits + Number(frac || '0');
  return Number.isSafeInteger(minor) ? minor : null;
}

/** Minutes and seconds since an RFC 3339 time: "3:07", "12:45", "1:02:03" (in `lang`'s digits). */
export function formatAge(sinceIso: string | null | undefined, now: number, lang: Lang = 'en'): string {
  return localDigits(age(sinceIso, now), lang);
}

function age(sinceIso: string | null | undefined, now: number): string {
  if (!sinceIso) return '';
  const ms = Math.max(0, now - Date.parse(sinceIso));
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = (s % 60).toString().padStart(2, '0');
  return h > 0 ? `${h}:${m.toString().padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** Age band of a kitchen job: fresh until 8 minutes, amber until 15, then red. */
export function ageBand(sinceIso: string | null | undefined, now: number): 'fresh' | 'amber' | 'red' {
  if (!sinceIso) return 'fresh';
  const min = (now - Date.parse(sinceIso)) / 60000;
  return min >= 15 ? 'red' : min >= 8 ? 'amber' : 'fresh';
}

/**
 * The shop's IANA time zone (from the synced settings): every time on every screen is the
 * shop's local time, whatever the device's own clock is set to. Until it is known, or when
 * the browser does not know it: the device's.
 */
let shopZone: string | undefined;
export function setShopTimeZone(zone: string | null | undefined): void {
  try {
    if (zone) new Intl.DateTimeFormat('en', { timeZone: zone });
    shopZone = zone || undefined;
  } catch {
    shopZone = undefined;
  }
}
export function shopTimeZone(): string | undefined {
  return shopZone;
}

/** The day of `d` in the shop's zone, as `YYYY-MM-DD` (to tell today from another day). */
function shopDay(d: Date): string {
  return d.toLocaleDateString('en-CA', { timeZone: shopZone });
}

/**
 * A time as staff read it, in the shop's zone: `02:44` today, `7 Dec, 02:44` another day (a
 * list of Z reports, an audit row, an order from last week always says which day).
 */
export function formatClock(ms: number | string, lang: Lang): string {
  const d = typeof ms === 'string' ? new Date(Date.parse(ms)) : new Date(ms);
  if (Number.isNaN(d.getTime())) return '';
  const time: Intl.DateTimeFormatOptions = { hour: '2-digit', minute: '2-digit', timeZone: shopZone };
  if (shopDay(d) === shopDay(new Date())) return d.toLocaleTimeString(intlLocale(lang), time);
  return d.toLocaleString(intlLocale(lang), { ...time, day: 'numeric', month: 'short' });
}

/** A business day (`2026-12-07`, a date with no time of day) as staff read it: `7 Dec 2026`. */
export function formatDay(date: string, lang: Lang): string {
  const d = new Date(`${date}T12:00:00Z`);
  if (Number.isNaN(d.getTime())) return date;
  return d.toLocaleDateString(intlLocale(lang), { day: 'numeric', month: 'short', year: 'numeric', timeZone: 'UTC' });
}

/** A date and time with the year, in the shop's zone (an order found in the history). */
export function formatDateTime(iso: string | null | undefined, lang: Lang): string {
  if (!iso) return '—';
  const d = new Date(Date.parse(iso));
  if (Number.isNaN(d.getTime())) return '—';
  return d.toLocaleString(intlLocale(lang), { dateStyle: 'medium', timeStyle: 'short', timeZone: shopZone });
}

/** How staff call an order: `#42`, or its provisional number (`B-7`) until the hub numbers it. */
export function orderLabel(
  o: { order_no: number | null; provisional_no?: string | null },
  lang: Lang,
): string {
  if (o.order_no != null) return `#${formatNumber(o.order_no, lang)}`;
  return o.provisional_no ?? '—';
}

export function shortId(id: string | null | undefined): string {
  return id ? id.replace(/-/g, '').slice(-6) : '—';
}
