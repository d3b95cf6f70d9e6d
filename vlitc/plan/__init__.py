"""What will run: a recipe becomes a DAG of steps."""

from vlitc.plan.draw import draw
from vlitc.plan.graph import Plan, Step, build_plan

__all__ = ["Plan", "Step", "build_plan", "draw"]
