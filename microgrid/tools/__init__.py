"""Tools over graphs: worked solutions (explain), marking hand-worked answers
(check), Graphviz drawings (draw), finite-difference checks (gradcheck) and
attributions (Shapley values, SHAP, integrated gradients)."""
