// Money, the same way everywhere on the page (the draft's estimate, an answer's cost, the
// monthly budget): US dollars, cents from $1 up ("$4.20", "$1,250.00"), up to four decimals
// below it so a small cost still shows ("$0.0031", "$0.12"), "<$0.0001" for less than that.

const DOLLARS = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const CENTS_AND_LESS = new Intl.NumberFormat("en-US", {
  style: "currency",
  currency: "USD",
  minimumFractionDigits: 2,
  maximumFractionDigits: 4,
});

/** `micros` (millionths of a dollar, as the API counts money) as text. */
export function formatCost(micros) {
  const dollars = (micros ?? 0) / 1_000_000;
  if (dollars > 0 && dollars < 0.0001) return "<$0.0001";
  return (Math.abs(dollars) >= 1 ? DOLLARS : CENTS_AND_LESS).format(dollars);
}
