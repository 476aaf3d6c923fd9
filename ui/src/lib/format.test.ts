import { describe, expect, it } from 'vitest';
import { ageBand, formatAge, formatMoney, minorToDecimalString, orderLabel, parseMoney, setMoneyUnit } from './format';
import { kitchenProgress, nextJobStatus, splitModifiers, toggleModifier } from './store/model';
import { percentile, rate } from './metrics';

const strip = (s: string) => s.replace(/[\u00a0\u202f\u200f\u200e\u061c]/g, ' ');

describe('money formatting', () => {
  it('formats halalas as SAR with two decimals in English', () => {
    expect(strip(formatMoney(1850, 'en'))).toMatch(/SAR\s?18\.50/);
    expect(strip(formatMoney(0, 'en'))).toMatch(/SAR\s?0\.00/);
    expect(strip(formatMoney(123456789, 'en'))).toMatch(/1,234,567\.89/);
    expect(strip(formatMoney(-505, 'en'))).toMatch(/-\s?SAR\s?5\.05|SAR\s?-5\.05/);
  });

  it('formats in Arabic with Arabic-Indic digits', () => {
    const s = formatMoney(1850, 'ar');
    expect(s).toContain('١٨٫٥٠');
  });

  it('never goes through binary floating point', () => {
    expect(minorToDecimalString(1)).toBe('0.01');
    expect(minorToDecimalString(1005)).toBe('10.05');
    expect(minorToDecimalString(-1805)).toBe('-18.05');
    expect(strip(formatMoney(29, 'en'))).toMatch(/0\.29/);
  });

  it('shows a dash for missing amounts', () => {
    expect(formatMoney(null, 'en')).toBe('—');
    expect(formatMoney(undefined, 'ar')).toBe('—');
  });
});

describe('parseMoney', () => {
  it.each([
    ['18.5', 1850],
    ['18.50', 1850],
    ['18', 1800],
    ['0.05', 5],
    ['.5', 50],
    ['1,200', 120000],
    [' 200 ', 20000],
    ['١٨٫٥٠', 1850],
  ])('%s -> %i', (text, minor) => {
    expect(parseMoney(text)).toBe(minor);
  });

  it.each(['', 'abc', '1.234', '-5', '1.2.3', '.'])('rejects %j', (text) => {
    expect(parseMoney(text)).toBeNull();
  });
});

describe('kitchen helpers', () => {
  it('ages jobs into amber at 8 and red at 15 minutes', () => {
    const t0 = Date.parse('2026-01-01T12:00:00Z');
    const at = (min: number) => t0 + min * 60000;
    expect(ageBand('2026-01-01T12:00:00Z', at(7.9))).toBe('fresh');
    expect(ageBand('2026-01-01T12:00:00Z', at(8))).toBe('amber');
    expect(ageBand('2026-01-01T12:00:00Z', at(15))).toBe('red');
    expect(formatAge('2026-01-01T12:00:00Z', at(3) + 7000)).toBe('3:07');
    expect(formatAge('2026-01-01T12:00:00Z', at(62))).toBe('1:02:00');
  });

  it('bumps queued -> cooking -> ready and no further', () => {
    expect(nextJobStatus('queued')).toBe('cooking');
    expect(nextJobStatus('cooking')).toBe('ready');
    expect(nextJobStatus('ready')).toBeNull();
  });

  it('summarises kitchen progress of an order', () => {
    const j = (order_id: string, status: string) => ({ data: { order_id, status } as never });
    expect(kitchenProgress('o', [])).toMatchObject({ state: 'none' });
    expect(kitchenProgress('o', [j('o', 'queued'), j('x', 'ready')])).toMatchObject({ state: 'queued', total: 1 });
    expect(kitchenProgress('o', [j('o', 'ready'), j('o', 'cooking')])).toMatchObject({ state: 'cooking', ready: 1, total: 2 });
    expect(kitchenProgress('o', [j('o', 'ready'), j('o', 'ready')])).toMatchObject({ state: 'ready' });
  });

  it('toggles modifiers in the stored text form', () => {
    expect(toggleModifier('', 'no onion')).toBe('no onion');
    expect(toggleModifier('no onion', 'spicy')).toBe('no onion; spicy');
    expect(toggleModifier('no onion; spicy', 'no onion')).toBe('spicy');
    expect(splitModifiers(' no onion ;; extra cheese ')).toEqual(['no onion', 'extra cheese']);
    expect(splitModifiers(null)).toEqual([]);
  });
});

describe('metrics helpers', () => {
  it('computes counter rates and percentiles', () => {
    expect(rate(100, 300, 2000)).toBe(100);
    expect(rate(null, 300, 2000)).toBeNull();
    expect(rate(300, 100, 2000)).toBeNull();
    expect(percentile([5, 1, 3, 2, 4], 50)).toBe(3);
    expect(percentile([5, 1, 3, 2, 4], 95)).toBe(5);
    expect(percentile([], 50)).toBeNull();
  });
});

describe('orderLabel', () => {
  it('calls an order by the hub number once it has one, by its provisional number before', () => {
    expect(orderLabel({ order_no: 42, provisional_no: 'B-7' }, 'en')).toBe('#42');
    expect(orderLabel({ order_no: null, provisional_no: 'B-7' }, 'en')).toBe('B-7');
    expect(orderLabel({ order_no: null, provisional_no: null }, 'en')).toBe('—');
  });
});

describe('currencies with other minor units', () => {
  it('reads and writes 3-digit and 0-digit amounts exactly', () => {
    expect(minorToDecimalString(1805, 3)).toBe('1.805');
    expect(minorToDecimalString(-5, 3)).toBe('-0.005');
    expect(minorToDecimalString(1805, 0)).toBe('1805');
    expect(parseMoney('1.805', 3)).toBe(1805);
    expect(parseMoney('1.8', 3)).toBe(1800);
    expect(parseMoney('1805', 0)).toBe(1805);
    // More decimals than the currency has is a typo, not a rounding.
    expect(parseMoney('1.805', 2)).toBeNull();
    expect(parseMoney('1.5', 0)).toBeNull();
  });
  it('formats in the shop currency once the settings say so', () => {
    setMoneyUnit('KWD', 3);
    expect(formatMoney(1805, 'en')).toContain('1.805');
    expect(formatMoney(1805, 'en')).toContain('KWD');
    setMoneyUnit('SAR', 2);
    expect(formatMoney(1805, 'en')).toContain('18.05');
  });
});
