// The user's monthly budget, as the last API answer's X-Budget-* headers told it (api.js
// reads them): "123,456 tokens · $4.20 left this month", or "No monthly limit".

import { formatCost } from "./format.js";

const integer = new Intl.NumberFormat("en-US");
// An answer is charged when the orchestrator settles it, a moment after its last frame.
const AFTER_ANSWER_MS = [300, 1000, 2000, 4000];

/** `budget` from api.js's budgetOf() as one line of text. */
export function describeBudget(budget) {
  const parts = [];
  if (budget.tokensRemaining !== null) parts.push(`${integer.format(budget.tokensRemaining)} tokens`);
  if (budget.costRemainingMicros !== null) parts.push(formatCost(budget.costRemainingMicros));
  return parts.length ? `${parts.join(" · ")} left this month` : "No monthly limit";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class BudgetView {
  constructor(node) {
    this.node = node;
    this.budget = null;
  }

  show(budget) {
    this.budget = budget;
    this.node.textContent = describeBudget(budget);
    const reset = budget.resetAt ? new Date(budget.resetAt * 1000) : null;
    this.node.title = `Plan “${budget.plan}”` + (reset ? `; resets ${reset.toLocaleString()}` : "");
    this.node.dataset.spent = String(budget.tokensRemaining === 0 || budget.costRemainingMicros === 0);
  }

  clear() {
    this.budget = null;
    this.node.textContent = "";
    this.node.removeAttribute("title");
    delete this.node.dataset.spent;
  }

  /**
   * An answer ended: it is charged a moment later. Asks `probe` (any API call: its answer
   * carries the budget) a few times until the remaining budget changes.
   */
  async afterAnswer(probe) {
    const before = this.budget;
    if (!before || (before.tokensRemaining === null && before.costRemainingMicros === null)) return;
    const changed = () =>
      this.budget !== null &&
      (this.budget.tokensRemaining !== before.tokensRemaining ||
        this.budget.costRemainingMicros !== before.costRemainingMicros);
    for (const ms of AFTER_ANSWER_MS) {
      await sleep(ms);
      if (changed() || this.budget === null) return;
      try {
        await probe();
      } catch {
        return;
      }
      if (changed()) return;
    }
  }
}
