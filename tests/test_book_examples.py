"""The book's worked examples, with the numbers it prints, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DTYPES, Book

from bpfast.functions import cross_entropy_error, mean_squared_error, sigmoid, softmax, softmax_loss
from bpfast.layers import Affine, AddLayer, MulLayer, Relu, SoftmaxWithLoss


def test_buy_apple(backend):
    """ch05/buy_apple.py: price 220, dApple 2.2, dApple_num 110, dTax 200."""
    apple, apple_num, tax = 100, 2, 1.1
    mul_apple_layer, mul_tax_layer = MulLayer(), MulLayer()
    apple_price = mul_apple_layer.forward(apple, apple_num)
    price = mul_tax_layer.forward(apple_price, tax)
    dapple_price, dtax = mul_tax_layer.backward(1)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)
    assert int(price) == 220
    assert dapple == pytest.approx(2.2) and int(dapple_num) == 110 and dtax == 200


def test_buy_apple_orange(backend):
    """ch05/buy_apple_orange.py: price 715, dApple 2.2, dApple_num 110, dOrange 3.3, dOrange_num 165, dTax 650."""
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple_layer, mul_orange_layer = MulLayer(), MulLayer()
    add_apple_orange_layer, mul_tax_layer = AddLayer(), MulLayer()

    apple_price = mul_apple_layer.forward(apple, apple_num)
    orange_price = mul_orange_layer.forward(orange, orange_num)
    all_price = add_apple_orange_layer.forward(apple_price, orange_price)
    price = mul_tax_layer.forward(all_price, tax)

    dall_price, dtax = mul_tax_layer.backward(1)
    dapple_price, dorange_price = add_apple_orange_layer.backward(dall_price)
    dorange, dorange_num = mul_orange_layer.backward(dorange_price)
    dapple, dapple_num = mul_apple_layer.backward(dapple_price)

    # The book prints int(price), int(dapple_num), int(dorange_num); the floats round.
    assert int(price) == 715 and price == pytest.approx(715)
    assert dapple == pytest.approx(2.2)
    assert int(dapple_num) == 110
    assert dorange == pytest.approx(3.3) and repr(dorange) == "3.3000000000000003"  # as printed
    assert int(dorange_num) == 165
    assert dtax == 650


def test_relu_mask_example(backend):
    """ch05: x = [[1.0, -0.5], [-2.0, 3.0]] gives mask [[False, True], [True, False]]."""
    x = np.array([[1.0, -0.5], [-2.0, 3.0]])
    layer = Relu()
    out = layer.forward(x)
    np.testing.assert_array_equal(layer.mask, [[False, True], [True, False]])
    np.testing.assert_array_equal(out, [[1.0, 0.0], [0.0, 3.0]])
    np.testing.assert_array_equal(layer.backward(np.ones((2, 2))), [[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_bias_example(backend, dtype):
    """ch05's batch Affine: X·W = [[0,0,0],[10,10,10]], B = [1,2,3]; dY = [[1,2,3],[4,5,6]] gives dB = [5,7,9]."""
    layer = Affine(np.ones((1, 3), dtype=dtype), np.array([1, 2, 3], dtype=dtype))
    out = layer.forward(np.array([[0], [10]], dtype=dtype))
    np.testing.assert_array_equal(out, [[1, 2, 3], [11, 12, 13]])
    dx = layer.backward(np.array([[1, 2, 3], [4, 5, 6]], dtype=dtype))
    np.testing.assert_array_equal(layer.db, [5, 7, 9])
    np.testing.assert_array_equal(layer.dW, [[40, 50, 60]])
    np.testing.assert_array_equal(dx, [[6], [15]])
    assert out.dtype == dx.dtype == layer.dW.dtype == layer.db.dtype == dtype


SWL_X = np.array([[1, 2, 0.5], [0, 1, 1]])
SWL_LOSS = 1.1631814594485623


@pytest.mark.parametrize("target", ["labels", "one-hot"])
def test_softmax_with_loss_example(backend, target):
    """SoftmaxWithLoss on [[1, 2, 0.5], [0, 1, 1]] with targets 0 and 1: loss 1.1631814594485623."""
    t = np.array([0, 1]) if target == "labels" else np.array([[1, 0, 0], [0, 1, 0]])
    layer = SoftmaxWithLoss()
    loss = layer.forward(SWL_X, t)
    assert loss == pytest.approx(SWL_LOSS, rel=1e-14)
    dx = layer.backward()

    e = np.exp(SWL_X - SWL_X.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True) - np.eye(3)[[0, 1]]) / 2
    np.testing.assert_allclose(dx, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dx, [[-0.3844, 0.3143, 0.0701], [0.0777, -0.2888, 0.2112]], atol=5e-5)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-15)


Y_CH4 = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]


@pytest.mark.parametrize(("label", "expected"), [(2, 0.510825457099338), (7, 2.302584092994546)])
def test_cross_entropy_error_example(backend, label, expected):
    """ch04: cross_entropy_error of the 10-class example, right class (2) and wrong class (7)."""
    y = np.array(Y_CH4)
    t = np.zeros(10)
    t[label] = 1
    assert cross_entropy_error(y, t) == pytest.approx(expected, rel=1e-14)
    assert cross_entropy_error(y, np.array([label])) == pytest.approx(expected, rel=1e-14)
    assert cross_entropy_error(y[None], t[None]) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize(("label", "expected"), [(2, 0.09750000000000003), (7, 0.5975)])
def test_mean_squared_error_example(backend, label, expected):
    """ch04: mean_squared_error of the same example: 0.0975 and 0.5975."""
    t = np.zeros(10)
    t[label] = 1
    assert mean_squared_error(np.array(Y_CH4), t) == pytest.approx(expected, rel=1e-14)


def test_softmax_example(backend):
    """ch03: softmax([0.3, 2.9, 4.0]) = [0.01821127, 0.24519181, 0.73659691], summing to 1."""
    y = softmax(np.array([0.3, 2.9, 4.0]))
    np.testing.assert_allclose(y, [0.01821127, 0.24519181, 0.73659691], atol=5e-9)
    assert y.sum() == pytest.approx(1.0, rel=1e-15)
    # ch03's overflow example: [1010, 1000, 990] is stable once the max is subtracted.
    np.testing.assert_allclose(
        softmax(np.array([1010, 1000, 990.0])), [9.99954600e-01, 4.53978686e-05, 2.06106005e-09], rtol=1e-8
    )


def test_sigmoid_example(backend):
    """ch03: sigmoid([-1.0, 1.0, 2.0]) = [0.26894142, 0.73105858, 0.88079708]."""
    np.testing.assert_allclose(sigmoid(np.array([-1.0, 1.0, 2.0])), [0.26894142, 0.73105858, 0.88079708], atol=5e-9)


def test_softmax_loss_matches_the_book(backend):
    """common/functions.py's softmax_loss is cross_entropy_error(softmax(X), t)."""
    assert softmax_loss(SWL_X, np.array([0, 1])) == pytest.approx(Book.softmax_loss(SWL_X, np.array([0, 1])), rel=1e-14)
    assert softmax_loss(SWL_X, np.array([0, 1])) == pytest.approx(SWL_LOSS, rel=1e-14)
